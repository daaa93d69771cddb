"""Bundled example experiments (the demo copies examples/digits)."""
