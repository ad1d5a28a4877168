"""Image-quality metrics of the DeBCR paper: PSNR, SSIM, (N)RMSE, entropy and FRC (Eq. 4–9).

Every pixel-wise score compares a prediction with its ground truth (GT) after one of three
intensity conventions, chosen with ``normalization=`` (see `normalize_pair`):

``"minmax"``
    The original DeBCR tester: prediction and GT are each min-max rescaled to [0, 1] on their
    own; ``data_range`` is 1.
``"affine"``
    CARE's convention (CSBDeep ``normalize_minmse``): the GT is percentile-normalised with the
    0.1 and 99.9 percentiles mapped to 0 and 1, then the prediction is replaced by the affine
    map ``alpha * pred + beta`` that minimises the mean squared error to the normalised GT
    (ordinary least squares); ``data_range`` is 1.
``"raw"``
    The arrays as given; ``data_range`` is the caller's, or ``gt.max() - gt.min()``.

The scores themselves come from scikit-image (``peak_signal_noise_ratio``,
``structural_similarity``, ``normalized_root_mse``, ``shannon_entropy``), applied to the
normalised pair; only the conventions, the edge cases (identical or constant images) and the
Fourier ring correlation (`frc`), which scikit-image lacks, are implemented here.

Arrays are 2-D images ``(Y, X)`` or 3-D stacks ``(Z, Y, X)``. A stack is treated as one
volume: it is normalised as a whole and PSNR/RMSE use one mean squared error over all voxels;
SSIM is the mean of the 2-D SSIM of its slices. `debcr.evaluate.evaluate` instead scores
each image (slice) of a stack separately, as the paper reports per-image values.

Only numpy, scipy, scikit-image and numpy-only debcr modules are imported here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.signal import windows
from skimage.measure import shannon_entropy
from skimage.metrics import (
    mean_squared_error,
    normalized_root_mse,
    peak_signal_noise_ratio,
    structural_similarity,
)

from debcr.data.normalize import compute_stats
from debcr.defaults import PERCENTILES
from debcr.errors import DataError

__all__ = [
    "AFFINE_PERCENTILES",
    "FRC_TUKEY_ALPHA",
    "NORMALIZATIONS",
    "ROUNDING_TOLERANCE",
    "FRCResult",
    "Normalization",
    "entropy",
    "frc",
    "frc_crossing",
    "normalize_pair",
    "nrmse",
    "psnr",
    "rmse",
    "ssim",
    "threshold_curve",
]

log = logging.getLogger(__name__)

Normalization = Literal["minmax", "affine", "raw"]
"""Name of an intensity convention (see the module docstring)."""

#: The conventions, in the order reports list them.
NORMALIZATIONS: tuple[str, ...] = ("minmax", "affine", "raw")

#: GT percentiles mapped to 0 and 1 by the ``"affine"`` convention (CARE's evaluation).
AFFINE_PERCENTILES: tuple[float, float] = PERCENTILES

#: Fraction of each image side tapered by the Tukey apodisation window of `frc`
#: (half of it at each edge; 0 is a box, 1 a Hann window).
FRC_TUKEY_ALPHA = 0.25

#: The fixed FRC threshold 1/7 (Rosenthal & Henderson 2003 for two independent halves).
_ONE_SEVENTH = 1.0 / 7.0


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _as_image(x: ArrayLike, name: str, ndims: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """``x`` as a finite float64 array of one of ``ndims`` dimensions, or DataError."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} has dtype {arr.dtype}; metrics need real-valued images")
    if arr.ndim not in ndims:
        wanted = " or ".join(f"{n}-D" for n in ndims)
        raise DataError(
            f"{name} has shape {arr.shape} ({arr.ndim}-D); a {wanted} image is needed "
            "(2-D (Y, X) or a 3-D (Z, Y, X) stack; squeeze length-1 axes first)"
        )
    if arr.size == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); give an image with pixels")
    arr = arr.astype(np.float64, copy=False)
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise DataError(
            f"{name} contains {bad} NaN or infinite value(s); replace or mask them before "
            "computing metrics"
        )
    return arr


def _pair(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_image(pred, "the prediction")
    g = _as_image(gt, "the ground truth")
    if p.shape != g.shape:
        raise DataError(
            f"the prediction has shape {p.shape} but the ground truth has shape {g.shape}; "
            "metrics compare images pixel by pixel, so give arrays of the same shape"
        )
    return p, g


def _check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise DataError(
            f"unknown normalization {normalization!r}; use one of {', '.join(NORMALIZATIONS)}"
        )
    return normalization


# --------------------------------------------------------------------------------------------
# Normalisation conventions
# --------------------------------------------------------------------------------------------


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:  # a constant image has no scale: map it to 0 like debcr.data.normalize
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def _percentile_normalize(gt: np.ndarray) -> np.ndarray:
    pmin, pmax = AFFINE_PERCENTILES
    stats = compute_stats(gt, pmin, pmax)
    lo, hi = float(stats.lo), float(stats.hi)
    if hi <= lo:
        # More than 99.8 % of the pixels share one value (e.g. a nearly empty image): the
        # percentiles give no scale, so fall back to the full range rather than divide by 0.
        lo, hi = float(gt.min()), float(gt.max())
        if hi <= lo:
            return np.zeros_like(gt)
    return (gt - lo) / (hi - lo)


def _fit_affine(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``alpha * pred + beta`` with the least-squares alpha, beta (CSBDeep normalize_minmse)."""
    p_mean, t_mean = float(pred.mean()), float(target.mean())
    centred = pred - p_mean
    var = float(np.vdot(centred, centred))
    # A constant prediction is best fitted by the constant mean of the target (alpha = 0);
    # CSBDeep's 1e-10 in the denominator gives the same limit, here without the bias.
    alpha = float(np.vdot(centred, target - t_mean)) / var if var > 0 else 0.0
    return alpha * centred + t_mean


def normalize_pair(
    pred: ArrayLike, gt: ArrayLike, normalization: Normalization = "raw"
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an intensity convention to a prediction and its ground truth.

    Parameters
    ----------
    pred, gt
        Prediction and ground truth of the same shape: 2-D images or 3-D stacks (a stack is
        normalised as one volume), any real dtype.
    normalization
        ``"minmax"``: each array is rescaled to [0, 1] by its own minimum and maximum (a
        constant array becomes 0), as the original DeBCR tester. ``"affine"``: the GT becomes
        ``(gt - p0.1) / (p99.9 - p0.1)`` with its 0.1 and 99.9 percentiles (linear
        interpolation, ``numpy.percentile``; the full min/max range where these coincide, 0
        for a constant GT), and the prediction becomes ``alpha * pred + beta`` with
        ``alpha = cov(pred, gt_n) / var(pred)`` and ``beta = mean(gt_n) - alpha * mean(pred)``,
        the least-squares fit to the normalised GT (alpha may be negative; a constant
        prediction becomes ``mean(gt_n)``), as CSBDeep's ``normalize_minmse``; no clipping.
        ``"raw"``: both unchanged.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The normalised prediction and GT as new float64 arrays. The data range to score them
        with is 1 for ``"minmax"`` and ``"affine"``.

    Raises
    ------
    DataError
        Unknown convention, different shapes, non-finite values, or not a 2-D/3-D array.
    """
    _check_normalization(normalization)
    p, g = _pair(pred, gt)
    if normalization == "minmax":
        return _minmax(p), _minmax(g)
    if normalization == "affine":
        g_n = _percentile_normalize(g)
        return _fit_affine(p, g_n), g_n
    return p.copy(), g.copy()


def _data_range(gt_n: np.ndarray, normalization: str, data_range: float | None) -> float:
    """The peak value of PSNR/SSIM under a convention (see `psnr`)."""
    if normalization != "raw":
        if data_range is not None:
            raise DataError(
                f"data_range={data_range!r} was given with normalization={normalization!r}, "
                "which fixes the range to 1; leave data_range unset or use normalization='raw'"
            )
        return 1.0
    if data_range is None:
        value = float(gt_n.max() - gt_n.min())
        if value <= 0:
            raise DataError(
                f"the ground truth is constant ({float(gt_n.min())!r}), so its range "
                "max - min is 0 and cannot serve as data_range; pass data_range (e.g. 255 for "
                "8-bit data) or use normalization='minmax'"
            )
        return value
    value = float(data_range)
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"data_range must be a positive finite number, got {data_range!r}")
    return value


# --------------------------------------------------------------------------------------------
# Pixel-wise scores
# --------------------------------------------------------------------------------------------

#: Root mean squared differences below this fraction of the data range count as 0: they are
#: float64 rounding of the normalisation (an exact affine copy fitted back leaves ~1e-16).
ROUNDING_TOLERANCE = 1e-12


def _rmse(p: np.ndarray, g: np.ndarray, scale: float) -> float:
    """RMSE, snapped to 0 below ``ROUNDING_TOLERANCE * scale``."""
    value = math.sqrt(mean_squared_error(g, p))
    return 0.0 if value <= ROUNDING_TOLERANCE * scale else value


def psnr(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    data_range: float | None = None,
    normalization: Normalization = "raw",
) -> float:
    """Peak signal-to-noise ratio in dB (paper Eq. 4): ``10 log10(data_range² / MSE)``.

    Parameters
    ----------
    pred, gt
        Prediction and ground truth of the same shape (2-D, or 3-D with one MSE over all
        voxels).
    data_range
        Peak value for ``normalization="raw"``; default ``gt.max() - gt.min()`` (the range
        actually present in the GT, not the dtype's range: an 8-bit GT spanning 3..231 gives
        228). Must be left unset for the other conventions, which use 1.
    normalization
        ``"minmax"``, ``"affine"`` or ``"raw"`` (see `normalize_pair`).

    Returns
    -------
    float
        PSNR in dB; ``math.inf`` when the (normalised) arrays are identical (MSE 0), as
        scikit-image's ``peak_signal_noise_ratio`` but without its divide-by-zero warning.
        An RMSE below `ROUNDING_TOLERANCE` × ``data_range`` counts as identical, so an
        exact affine copy scores inf under ``"affine"``/``"minmax"`` despite rounding; finite
        values therefore stay below 240 dB.

    Raises
    ------
    DataError
        Different shapes, non-finite values, an invalid ``data_range``, or a constant GT in the
        ``"raw"`` convention without ``data_range``.
    """
    p, g = normalize_pair(pred, gt, normalization)
    peak = _data_range(g, normalization, data_range)
    if _rmse(p, g, peak) == 0:
        return math.inf
    return float(peak_signal_noise_ratio(g, p, data_range=peak))


def ssim(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    data_range: float | None = None,
    normalization: Normalization = "raw",
    **kwargs: Any,
) -> float:
    """Structural similarity (paper Eq. 5) via ``skimage.metrics.structural_similarity``.

    Parameters
    ----------
    pred, gt
        2-D images, or 3-D stacks scored as the mean of the 2-D SSIM of their slices (the
        stack is normalised as a whole first).
    data_range, normalization
        As for `psnr`.
    **kwargs
        Passed to ``structural_similarity`` (e.g. ``gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False`` for Wang et al.'s variant). The default is
        scikit-image's: a 7×7 uniform window, K1 = 0.01, K2 = 0.03, as the original DeBCR.

    Returns
    -------
    float
        Mean SSIM, 1.0 for identical arrays.

    Raises
    ------
    DataError
        As for `psnr`, or an image smaller than the SSIM window.
    """
    p, g = normalize_pair(pred, gt, normalization)
    peak = _data_range(g, normalization, data_range)
    planes = [(p, g)] if p.ndim == 2 else list(zip(p, g))
    try:
        values = [structural_similarity(b, a, data_range=peak, **kwargs) for a, b in planes]
    except ValueError as exc:
        raise DataError(
            f"SSIM cannot be computed for images of shape {g.shape[-2:]}: {exc}; use images of "
            "at least 7×7 pixels or pass a smaller odd win_size"
        ) from exc
    return float(np.mean(values))


def rmse(pred: ArrayLike, gt: ArrayLike, *, normalization: Normalization = "raw") -> float:
    """Root mean squared error after the chosen convention (see `normalize_pair`).

    Returns
    -------
    float
        ``sqrt(mean((pred_n - gt_n)²))`` in GT units for ``"raw"``, else in normalised units;
        0 when below `ROUNDING_TOLERANCE` × the range of the normalised GT.
    """
    p, g = normalize_pair(pred, gt, normalization)
    return _rmse(p, g, float(g.max() - g.min()))


def nrmse(pred: ArrayLike, gt: ArrayLike, *, normalization: Normalization = "raw") -> float:
    """Range-normalised RMSE (paper Eq. 6): ``RMSE / (max(gt_n) - min(gt_n))``.

    Computed with ``skimage.metrics.normalized_root_mse(..., normalization="min-max")`` on the
    normalised pair, so under ``"minmax"`` it equals `rmse`, and under ``"raw"`` it is
    independent of the units of the data.

    Returns
    -------
    float
        NRMSE; 0 for identical arrays (and below `ROUNDING_TOLERANCE`); ``nan`` (with a
        logged warning) when the normalised GT is constant, since the measure is then
        undefined.
    """
    p, g = normalize_pair(pred, gt, normalization)
    span = float(g.max() - g.min())
    if _rmse(p, g, span) == 0:
        return 0.0
    if span == 0:
        log.warning("NRMSE is undefined for a constant ground truth; returning nan")
        return math.nan
    return float(normalized_root_mse(g, p, normalization="min-max"))


def entropy(img: ArrayLike) -> float:
    """Shannon entropy in bits of the 8-bit histogram of an image (paper Eq. 8).

    The image (2-D, or a 3-D stack as one histogram) is min-max scaled to 0..255 and rounded
    to the nearest of the 256 levels; the entropy ``-sum p_i log2 p_i`` of the level
    frequencies is computed with ``skimage.measure.shannon_entropy``. The paper calls GT images
    with entropy below 5 bits sparse.

    Returns
    -------
    float
        Entropy in [0, 8]: 0 for a constant image, 8 for an image whose pixels use all 256
        levels equally often (e.g. a uniform ramp).
    """
    x = _as_image(img, "the image")
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return 0.0
    levels = np.rint((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return float(shannon_entropy(levels, base=2))


# --------------------------------------------------------------------------------------------
# Fourier ring correlation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FRCResult:
    """A Fourier ring correlation curve and the resolution it implies.

    Attributes
    ----------
    frequencies
        Centre of each ring: spatial frequency in cycles per pixel, or per unit of
        ``pixel_size`` when it was given. Ring 0 is the zero frequency (DC).
    correlation
        FRC value of each ring, in [-1, 1].
    threshold_curve
        Threshold of each ring (constant 1/7, or the half-bit curve).
    resolution
        ``1 / f`` at the first frequency ``f`` (ring 1 upwards, linearly interpolated between
        rings) where the correlation falls below the threshold, in pixels or units of
        ``pixel_size``; larger is worse. None when the curve never falls below the threshold,
        i.e. the resolution is at or beyond the highest measurable frequency.
    """

    frequencies: np.ndarray
    correlation: np.ndarray
    threshold_curve: np.ndarray
    resolution: float | None


def _tukey2d(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(
        windows.tukey(shape[0], FRC_TUKEY_ALPHA, sym=False),
        windows.tukey(shape[1], FRC_TUKEY_ALPHA, sym=False),
    )


def _spectrum(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    # The mean is removed before apodising so the large zero-frequency peak, spread by the
    # window's own spectrum, does not leak into (and inflate) the lowest rings.
    return np.fft.fft2((img - img.mean()) * window)


def _ring_index(shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Ring of each FFT sample (1-pixel rings of the shorter side's grid) and ring count."""
    side = min(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    ring = np.rint(np.hypot(fy, fx) * side).astype(np.intp)
    return ring, side // 2 + 1  # rings 0 .. Nyquist; the corners beyond it are dropped


def _ring_sums(
    pairs: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pooled per-ring cross power, powers and sample counts of spectrum pairs."""
    ring, n_rings = _ring_index(shape)
    inside = ring < n_rings
    idx = ring[inside]
    cross = np.zeros(n_rings)
    power1 = np.zeros(n_rings)
    power2 = np.zeros(n_rings)
    for f1, f2 in pairs:
        cross += np.bincount(idx, (f1 * np.conj(f2)).real[inside], n_rings)
        power1 += np.bincount(idx, (np.abs(f1) ** 2)[inside], n_rings)
        power2 += np.bincount(idx, (np.abs(f2) ** 2)[inside], n_rings)
    counts = np.bincount(idx, minlength=n_rings) * len(pairs)
    return cross, power1, power2, counts, min(shape)


def threshold_curve(threshold: str | float, counts: np.ndarray) -> np.ndarray:
    """The FRC threshold of every ring.

    Parameters
    ----------
    threshold
        ``"1/7"``, ``"half-bit"`` (van Heel & Schatz 2005) or a number in (0, 1).
    counts
        Samples per ring (the half-bit curve depends on them).

    Raises
    ------
    DataError
        An unknown threshold; the message lists the valid ones.
    """
    if isinstance(threshold, str):
        if threshold == "1/7":
            return np.full(counts.shape, _ONE_SEVENTH)
        if threshold == "half-bit":
            # van Heel & Schatz (2005): the SNR of half a bit per ring, for n ring samples.
            root = np.sqrt(np.maximum(counts, 1))
            return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)
    elif isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        if 0 < float(threshold) < 1:
            return np.full(counts.shape, float(threshold))
    raise DataError(
        f"unknown FRC threshold {threshold!r}; use '1/7', 'half-bit' or a number in (0, 1)"
    )


def frc_crossing(freqs: np.ndarray, corr: np.ndarray, thresh: np.ndarray) -> float | None:
    """First frequency (ring >= 1) where an FRC curve falls below a threshold, interpolated.

    Parameters
    ----------
    freqs, corr, thresh
        The rings' frequencies, the correlation and the threshold curve (as in `FRCResult`).

    Returns
    -------
    float or None
        The frequency of the crossing; None if the curve never falls below the threshold.
    """
    margin = corr - thresh
    below = np.flatnonzero(margin[1:] < 0)
    if below.size == 0:
        return None
    k = int(below[0]) + 1
    if k == 1:  # ring 0 is the (mean-removed) DC term, not a usable starting point
        return float(freqs[1])
    t = margin[k - 1] / (margin[k - 1] - margin[k])
    return float(freqs[k - 1] + t * (freqs[k] - freqs[k - 1]))


def _shifted(spectrum: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Undo an offset: the spectrum of ``ref`` from that of ``img(y, x) = ref(y + dy, x + dx)``.

    By the Fourier shift theorem the offset multiplies the spectrum by ``exp(2πi f·d)``.
    """
    fy = np.fft.fftfreq(spectrum.shape[0])[:, None]
    fx = np.fft.fftfreq(spectrum.shape[1])[None, :]
    return spectrum * np.exp(-2j * np.pi * (fy * dy + fx * dx))


def frc(
    img1: ArrayLike,
    img2: ArrayLike | None = None,
    *,
    threshold: Literal["1/7", "half-bit"] | float = "1/7",
    pixel_size: float | None = None,
) -> FRCResult:
    """Fourier ring correlation of two images, or of one image split in two (paper Eq. 9).

    ``FRC(r) = Re sum_{k in r} F1(k) F2*(k) / sqrt(sum |F1(k)|² · sum |F2(k)|²)`` over rings
    ``r`` of the 2-D FFT. Before the FFT each image has its mean removed and is multiplied by
    a separable Tukey window (`FRC_TUKEY_ALPHA`), which suppresses the cross-shaped
    artefacts that the image edges (a non-periodic image) put into the spectrum. Rings are 1
    frequency pixel wide on the grid of the shorter image side ``L``: ring ``k`` holds the
    samples with ``round(|f| · L) = k`` for ``f`` in cycles per pixel, so its centre is
    ``k / L`` cycles per pixel, from 0 to the Nyquist frequency 0.5; the corners beyond it are
    ignored.

    With one image, the single-image FRC: the image (cropped to even sides) is split into its
    four pixel sub-lattices, ``a = img[0::2, 0::2]``, ``b = img[1::2, 1::2]``,
    ``c = img[0::2, 1::2]``, ``d = img[1::2, 0::2]``, and the diagonal pairs (a, b) and (c, d)
    are correlated, their ring sums pooled. Each pair holds independent noise over the same
    structure, offset by half a sub-image pixel along both axes; that offset is removed
    exactly in Fourier space (a phase ramp) instead of being corrected empirically. A
    sub-image pixel is 2 image pixels, so sub-image ring ``k`` (of ``L/2``) is reported at
    ``k / L`` cycles per image pixel: the curve ends at 0.25 cycles per pixel (sub-image
    Nyquist), i.e. resolutions down to 4 pixels can be measured.

    Parameters
    ----------
    img1, img2
        2-D images of the same shape, at least 8×8 pixels (16×16 for a single image). For a
        restoration, ``img2`` is typically the ground truth.
    threshold
        ``"1/7"`` (fixed 0.143), ``"half-bit"`` (van Heel & Schatz 2005,
        ``(0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n)`` with ``n`` the samples in the ring),
        or a fixed number in (0, 1).
    pixel_size
        Physical pixel size; frequencies are then in cycles per unit and the resolution in
        units.

    Returns
    -------
    FRCResult
        Frequencies, correlation, threshold curve and resolution (None if the curve never
        falls below the threshold).

    Raises
    ------
    DataError
        Not 2-D, different shapes, too small, non-finite, constant (the FRC is undefined
        without structure), or an invalid threshold or pixel size.
    """
    a = _as_image(img1, "the first FRC image", (2,))
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise DataError(f"pixel_size must be a positive finite number, got {pixel_size!r}")
    images = [a]
    if img2 is not None:
        b = _as_image(img2, "the second FRC image", (2,))
        if b.shape != a.shape:
            raise DataError(
                f"the FRC images have shapes {a.shape} and {b.shape}; give images of the same shape"
            )
        images.append(b)
    for i, img in enumerate(images, 1):
        if float(img.max()) == float(img.min()):
            raise DataError(
                f"FRC image {i} is constant ({float(img.min())!r}); the Fourier ring "
                "correlation is undefined for an image without structure"
            )
    minimum = 8 if img2 is not None else 16
    if min(a.shape) < minimum:
        raise DataError(
            f"the FRC image of shape {a.shape} is too small; give at least {minimum}×{minimum} "
            "pixels"
        )

    if img2 is not None:
        window = _tukey2d(a.shape)
        pairs = [(_spectrum(a, window), _spectrum(images[1], window))]
        shape = a.shape
        scale = 1.0  # ring k is at k / L cycles per pixel
    else:
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:h, :w]
        shape = (h // 2, w // 2)
        window = _tukey2d(shape)
        sub = {
            name: _spectrum(a[y::2, x::2], window)
            for name, (y, x) in {"a": (0, 0), "b": (1, 1), "c": (0, 1), "d": (1, 0)}.items()
        }
        # b sits (+0.5, +0.5) and d (+0.5, -0.5) sub-pixels from a and c respectively.
        pairs = [
            (sub["a"], _shifted(sub["b"], 0.5, 0.5)),
            (sub["c"], _shifted(sub["d"], 0.5, -0.5)),
        ]
        scale = 0.5  # a sub-image pixel is two image pixels
    cross, power1, power2, counts, side = _ring_sums(pairs, shape)
    denom = np.sqrt(power1 * power2)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), 0.0)
    frequencies = np.arange(correlation.size) / side * scale
    if pixel_size is not None:
        frequencies = frequencies / pixel_size
    thresh = threshold_curve(threshold, counts)
    crossing = frc_crossing(frequencies, correlation, thresh)
    return FRCResult(
        frequencies=frequencies,
        correlation=correlation,
        threshold_curve=thresh,
        resolution=None if crossing is None else 1.0 / crossing,
    )
