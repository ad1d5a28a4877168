"""Training m-rBCR with Lightning (torch and lightning imported here, not at ``import debcr``).

The files of a run folder are named in `debcr.defaults` (``BEST_MODEL``, ``LAST_MODEL``,
``RESUME_CHECKPOINT``, ``RUN_CONFIG``).
"""

from debcr.training.curves import plot_curves, read_metrics
from debcr.training.run import TrainingInterrupted, fit

__all__ = [
    "TrainingInterrupted",
    "fit",
    "plot_curves",
    "read_metrics",
]
