"""Trials: candidate code run contained (sandbox, supervisor), its CPU pre-flight, and waiting on Ray.

May import autoraysearch.campaign.opening; sandbox.py imports only the standard library (its text is run
as it is in a supervisor process)."""
