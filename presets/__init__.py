"""Bundled YAML presets, read through importlib.resources."""
