"""Prefect flows: they only orchestrate the loop steps in autoraysearch.tasks."""
