"""Parquet schemas of the lake, declared once.

Curated data is three tables per batch (`curated/batches/<key>/`):
- `pairs.parquet`    — one row per pair first seen in that batch (PAIR_INDEX);
- `votes.parquet`    — one row per accepted annotator judgement (VOTES), votes are stored in the
                       pair's canonical orientation: `x_sha` < `y_sha`;
- `quarantine.parquet` — one row per rejected input row, with the reason (QUARANTINE).
The catalogue view `pairs` (editr1.lake.catalog) aggregates votes across all batches into the
design's curated pair (chosen/rejected, label, annotators, agreement, split).
"""

import pyarrow as pa

PAIR_INDEX = pa.schema([
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("context_id", pa.string(), nullable=False),
    pa.field("source_sha", pa.string(), nullable=False),
    pa.field("x_sha", pa.string(), nullable=False),
    pa.field("y_sha", pa.string(), nullable=False),
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("batch_id", pa.string(), nullable=False),
])

VOTES = pa.schema([
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("annotator", pa.string(), nullable=False),
    pa.field("vote", pa.string(), nullable=False),  # "x" | "y" | "tie"
    pa.field("batch_id", pa.string(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
])

QUARANTINE = pa.schema([
    pa.field("batch_id", pa.string(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("raw", pa.string()),  # the input row as JSON (or its undecodable bytes, escaped)
])

CONTEXT_SPLITS = pa.schema([
    pa.field("context_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
])

# The aggregated curated pair (DESIGN §3), as the catalogue view `pairs` returns it.
CURATED_PAIR = pa.schema([
    pa.field("pair_id", pa.string()),
    pa.field("context_id", pa.string()),
    pa.field("source_sha", pa.string()),
    pa.field("chosen_sha", pa.string()),
    pa.field("rejected_sha", pa.string()),
    pa.field("instruction", pa.string()),
    pa.field("category", pa.string()),
    pa.field("label", pa.string()),  # "chosen" | "tie"
    pa.field("annotators", pa.int64()),
    pa.field("votes", pa.int64()),
    pa.field("agreement", pa.float64()),
    pa.field("batch_id", pa.string()),
    pa.field("split", pa.string()),
])

_PRINCIPLE = pa.struct([pa.field("question", pa.string()), pa.field("category", pa.string())])

# `principles` stage output: one checklist per context.
PRINCIPLES = pa.schema([
    pa.field("context_id", pa.string(), nullable=False),
    pa.field("source_sha", pa.string(), nullable=False),
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("principles", pa.list_(_PRINCIPLE), nullable=False),
    pa.field("teacher", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
])

# `coldstart` stage output: one selected teacher trace per (context, edited image).
TRAJECTORIES = pa.schema([
    pa.field("context_id", pa.string(), nullable=False),
    pa.field("source_sha", pa.string(), nullable=False),
    pa.field("edited_sha", pa.string(), nullable=False),
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("principles", pa.list_(_PRINCIPLE), nullable=False),
    pa.field("text", pa.string(), nullable=False),  # the selected trace: reasoning, JSON, <score>
    pa.field("score", pa.float64()),  # parsed final score of the selected trace
    pa.field("principle_scores", pa.list_(pa.int8())),  # the trace's 0/1 answers
    pa.field("gold", pa.list_(pa.int8())),  # the verifier's 0/1 labels
    pa.field("agreement", pa.float64()),  # share of answers equal to gold
    pa.field("candidates", pa.int32()),  # K
    pa.field("selected_index", pa.int32()),
    pa.field("accepted", pa.bool_()),
    pa.field("reject_reason", pa.string()),  # null when accepted
    pa.field("teacher", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("prompt_hash", pa.string(), nullable=False),
])
