"""Maintainer tools that derive koconform's committed data from upstream artefacts."""
