"""Ideators: who proposes the next change to model.py (mutate: offline rules; llm: LLM endpoints and commands).

May import autoraysearch.campaign.opening, autoraysearch.trials (the pre-flight) and autoraysearch.setup (templates)."""
