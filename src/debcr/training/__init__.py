"""Training m-rBCR with Lightning (torch and lightning imported here, not at ``import debcr``)."""

from debcr.training.run import BEST, CONFIG, LAST, RESUME, fit, plot_curves, read_metrics

__all__ = ["BEST", "CONFIG", "LAST", "RESUME", "fit", "plot_curves", "read_metrics"]
