"""Lazy restoration of dask arrays, on a real dask.distributed cluster."""

from __future__ import annotations

import dask.array as da
import distributed
import numpy as np
import pytest

from conftest import fmd_frame
from debcr.errors import DataError
from debcr.model import predict


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.tile(fmd_frame(19, 3), (1, 2))[:300, :700]  # 300×700: non-square, odd chunks


@pytest.mark.slow
def test_dask_input_gives_a_lazy_result_equal_to_memory(denoiser, image) -> None:
    chunked = da.from_array(image, chunks=(150, 250))
    # float32, the exact mode: tiles join exactly, whatever their geometry.
    exact = {"tile_size": 256, "precision": "float32", "units": "normalized"}
    lazy = predict(denoiser, chunked, **exact)
    assert isinstance(lazy, da.Array) and lazy.shape == image.shape and lazy.dtype == np.float32
    expected = predict(denoiser, image, progress=False, **exact)
    assert np.abs(lazy.compute(scheduler="threads") - expected).max() <= 1e-5
    # The default units: the lazy calibration comes from a sample of about three 256² windows
    # (here about half of the image), the in-memory one from every pixel; docs/concepts.md
    # documents the difference (mean within 1 %, pixels within 3 % of the range).
    calibrated = predict(denoiser, image, tile_size=256, precision="float32", progress=False)
    got = predict(denoiser, chunked, tile_size=256, precision="float32").compute()
    assert got.mean() == pytest.approx(calibrated.mean(), rel=0.01)
    assert np.abs(got - calibrated).max() <= 0.03 * np.ptp(calibrated)
    # The default precision (bfloat16 on CPUs that compute it natively) rounds each tile
    # geometry differently: chunks and tiles then agree to bfloat16's own error (~1e-2).
    fast = predict(denoiser, chunked, tile_size=256, units="normalized").compute()
    assert np.abs(fast - expected).max() <= 2e-2


@pytest.mark.slow
def test_dask_on_a_local_cluster_with_two_workers(denoiser, image) -> None:
    stack = np.stack([image[:, :352], image[:, 348:]])
    expected = predict(denoiser, stack, units="normalized", precision="float32", progress=False)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        chunks = da.from_array(stack, chunks=(1, 160, 200))
        lazy = predict(denoiser, chunks, units="normalized", precision="float32")
        got = client.compute(lazy).result()
        assert len(client.scheduler_info()["workers"]) == 2
    assert got.shape == stack.shape
    assert np.abs(got - expected).max() <= 1e-5


def test_dask_rejects_output_paths_and_4d(denoiser, tmp_path) -> None:
    with pytest.raises(DataError, match="to_zarr"):
        predict(denoiser, da.zeros((64, 64)), output=tmp_path / "x.zarr")
    with pytest.raises(DataError, match="2-D"):
        predict(denoiser, da.zeros((2, 2, 64, 64)))
