"""Prefect flows: one per stage (same name as the stage) plus `pipeline` (all stages)."""
