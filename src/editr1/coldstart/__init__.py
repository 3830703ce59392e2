"""Cold start (DESIGN §5): the `principles` stage (a checklist per context) and the `coldstart`
stage (K teacher traces per (context, edited image), verified, one selected)."""

from editr1.coldstart.checklists import load_principles, run_principles
from editr1.coldstart.selection import Selection, agreement, contradicts, select_trace
from editr1.coldstart.trajectories import load_trajectories, run_coldstart

__all__ = [
    "Selection", "agreement", "contradicts", "load_principles", "load_trajectories", "run_coldstart",
    "run_principles", "select_trace",
]
