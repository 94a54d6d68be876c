"""The `cbloop` command line."""
