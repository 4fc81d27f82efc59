"""koconform's reference loader: Linux 6.1 load_module, stage by stage."""
