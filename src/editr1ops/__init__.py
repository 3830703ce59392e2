"""The operations layer over the `editr1` library: the `editr1` command line, MLflow tracking
and the reward-model registry (promotion, `models:/` URIs).

`editr1` (the domain library) imports neither MLflow nor Prefect; this package may import MLflow;
`tasks/` and `flows/` (Prefect) compose both.
"""
