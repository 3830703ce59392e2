"""Curation: validate, deduplicate, split and store the data team's preference batches."""

from editr1.curation.ids import context_id, normalise_instruction, pair_id
from editr1.curation.ingest import AddSummary, add_batch
from editr1.curation.listing import find_batches, list_batches, show_batch
from editr1.curation.splits import assign_splits, hash_split

__all__ = [
    "AddSummary", "add_batch", "assign_splits", "context_id", "find_batches", "hash_split", "list_batches",
    "normalise_instruction", "pair_id", "show_batch",
]
