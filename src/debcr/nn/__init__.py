"""Neural-network building blocks (torch): the m-rBCR network, its losses, the CARE baseline."""

from debcr.defaults import ARCHITECTURE, ARCHITECTURE_VERSION
from debcr.nn.mrbcr import (
    MRBCR,
    SIZE_MULTIPLE,
    MRBCRRestorer,
    count_parameters,
    init_glorot_,
    pad_to_multiple,
)
from debcr.nn.receptive import HALO_TOLERANCE, effective_halo
from debcr.nn.unet import CAREUNet

__all__ = [
    "ARCHITECTURE",
    "ARCHITECTURE_VERSION",
    "HALO_TOLERANCE",
    "MRBCR",
    "SIZE_MULTIPLE",
    "CAREUNet",
    "MRBCRRestorer",
    "count_parameters",
    "effective_halo",
    "init_glorot_",
    "pad_to_multiple",
]
