"""The campaign: its settings, the results log, git, the lock, the noise and early-stopping rules, resuming.

Imports only the standard library, pydantic, GitPython and autoraysearch.errors (and within itself);
everything else builds on it."""
