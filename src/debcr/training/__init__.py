"""Training m-rBCR with Lightning (torch and lightning imported here, not at ``import debcr``)."""

from debcr.training.curves import plot_curves, read_metrics
from debcr.training.run import BEST, CONFIG, LAST, RESUME, TrainingInterrupted, fit

__all__ = [
    "BEST",
    "CONFIG",
    "LAST",
    "RESUME",
    "TrainingInterrupted",
    "fit",
    "plot_curves",
    "read_metrics",
]
