"""autoraysearch: autonomous ML iteration on a Ray cluster, orchestrated by Prefect."""

__version__ = "0.1.0"
