"""One module per loop step: a pure function plus a thin Prefect @task wrapper."""
