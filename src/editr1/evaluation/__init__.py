"""Evaluation (DESIGN §1 `evaluate`): pairwise accuracy of reward models against human pairs.

`pairwise` holds the pure metrics (no torch); `rrm_eval` scores curated pairs with an RRM and
computes its metrics per readout, category and pair kind. Import `rrm_eval` from its module: this
package file only re-exports the pure functions, so importing it never loads a model stack.
"""

from editr1.evaluation.pairwise import (
    bootstrap_ci,
    calibrate_tie_threshold,
    grouped,
    pairwise_accuracy,
    pairwise_correct,
)

__all__ = ["bootstrap_ci", "calibrate_tie_threshold", "grouped", "pairwise_accuracy", "pairwise_correct"]
