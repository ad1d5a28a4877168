"""Neural-network building blocks (torch): the m-rBCR network and its losses."""

from debcr.nn.mrbcr import (
    ARCHITECTURE,
    ARCHITECTURE_VERSION,
    MRBCR,
    SIZE_MULTIPLE,
    count_parameters,
    init_glorot_,
    pad_to_multiple,
)

__all__ = [
    "ARCHITECTURE",
    "ARCHITECTURE_VERSION",
    "MRBCR",
    "SIZE_MULTIPLE",
    "count_parameters",
    "init_glorot_",
    "pad_to_multiple",
]
