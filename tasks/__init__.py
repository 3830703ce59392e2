"""Thin Prefect tasks: resolve inputs, call one library function, log to MLflow, return paths/dicts."""
