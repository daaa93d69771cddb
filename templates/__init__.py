"""Jinja2 templates rendered by autoraysearch (train.py, prompts)."""
