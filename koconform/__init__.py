"""koconform: conformance vectors for Linux kernel module loaders."""
