"""Setting an experiment up: checking model.py, choosing a dataset, rendering train.py, the plan wizard.

May import autoraysearch.campaign.opening and autoraysearch.trials; rendering.py also runs with only
Jinja2 installed (benchmarks/gpu_check.py)."""
