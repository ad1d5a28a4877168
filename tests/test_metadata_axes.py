"""Physical metadata and axes from input to output; time series and channels (real data).

Every supported input flavour (ImageJ TIFF, OME-TIFF, OME-Zarr 0.4 and 0.5) of every layout
(YX, ZYX, TYX) goes to every output format that holds metadata (.tif, .ome.tif, .zarr,
.ome.zarr), through ``debcr.data.load``/``write`` and through ``predict(path, output=path)``;
pixel/voxel sizes, units, axes and frame interval must come back equal. ``.npy``/``.png``
outputs keep no metadata (by design: the formats have no place for it).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from conftest import DATA, fmd_frame
from debcr.data import load, write
from debcr.data.io import ImageMetadata
from debcr.errors import DataError
from debcr.inference import predict as engine_predict
from debcr.inference.options import PredictOptions
from debcr.model import predict

CROP = 64


def _crop(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[..., 100 : 100 + CROP, 100 : 100 + CROP])


@pytest.fixture(scope="module")
def layouts() -> dict[str, tuple[np.ndarray, ImageMetadata]]:
    """Real data with the calibration the issue names, cropped small so predict is fast."""
    img2d = _crop(tifffile.imread(DATA / "stardist" / "img2d.tif"))
    nuclei = _crop(tifffile.imread(DATA / "cells3d_nuclei" / "nuclei.tif")[20:23])
    frames = _crop(np.stack([fmd_frame(19, i) for i in range(3)]))
    return {
        "YX": (img2d, ImageMetadata(axes="YX", scale=(0.0426, 0.0426), unit="um")),
        "ZYX": (nuclei, ImageMetadata(axes="ZYX", scale=(0.29, 0.26, 0.26), unit="um")),
        "TYX": (
            frames,
            ImageMetadata(axes="TYX", scale=(0.5, 0.1, 0.1), unit="um", time_unit="s"),
        ),
        "CZYX": (
            np.stack([nuclei, nuclei[:, ::-1] // 2]),
            ImageMetadata(
                axes="CZYX",
                scale=(1.0, 0.29, 0.26, 0.26),
                unit="um",
                channel_names=("nuclei", "mirrored"),
            ),
        ),
    }


# --- writing the inputs the way other software does (tifffile / zarr directly) -------------


def _imagej_tiff(path: Path, data: np.ndarray, meta: ImageMetadata) -> Path:
    sizes = dict(zip(meta.axes, meta.scale))
    md: dict[str, Any] = {"axes": meta.axes, "unit": "um"}
    if "Z" in sizes:
        md["spacing"] = sizes["Z"]
    if "T" in sizes:
        md["finterval"] = sizes["T"]
    if meta.channel_names:
        planes = data.size // (data.shape[-1] * data.shape[-2])
        md["Labels"] = list(meta.channel_names) * (planes // 2)  # one label per plane
    if "C" in meta.axes:  # ImageJ wants the channel axis after Z
        data, md["axes"] = np.moveaxis(data, 0, 1), "ZCYX"
    path = path / "in.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / sizes["X"], 1 / sizes["Y"]), metadata=md
    )
    return path


def _ome_tiff(path: Path, data: np.ndarray, meta: ImageMetadata) -> Path:
    sizes = dict(zip(meta.axes, meta.scale))
    md: dict[str, Any] = {"axes": meta.axes}
    for axis in "XYZ":
        if axis in sizes:
            md[f"PhysicalSize{axis}"] = sizes[axis]
            md[f"PhysicalSize{axis}Unit"] = "µm"
    if "T" in sizes:
        md.update(TimeIncrement=sizes["T"], TimeIncrementUnit="s")
    if meta.channel_names:
        md["Channel"] = {"Name": list(meta.channel_names)}
    path = path / "in.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata=md)
    return path


def _ngff(meta: ImageMetadata, version: str) -> dict[str, Any]:
    types = {"T": "time", "C": "channel"}
    axes = []
    for a in meta.axes:
        entry = {"name": a.lower(), "type": types.get(a, "space")}
        if entry["type"] == "space":
            entry["unit"] = "micrometer"
        if a == "T":
            entry["unit"] = "second"
        axes.append(entry)
    # Two resolution levels: debcr must pick "0" (full resolution) and its scale.
    lateral = [2.0 if a in "YX" else 1.0 for a in meta.axes]
    datasets = [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(meta.scale)}]},
        {
            "path": "1",
            "coordinateTransformations": [
                {"type": "scale", "scale": [s * f for s, f in zip(meta.scale, lateral)]}
            ],
        },
    ]
    ms: dict[str, Any] = {"axes": axes, "datasets": datasets}
    if version == "0.4":
        ms["version"] = "0.4"
    return ms


def _ome_zarr(path: Path, data: np.ndarray, meta: ImageMetadata, version: str) -> Path:
    import zarr

    path = path / "in.ome.zarr"
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    group.create_array("0", data=data)
    group.create_array("1", data=np.ascontiguousarray(data[..., ::2, ::2]))
    omero = None
    if meta.channel_names:
        omero = {"channels": [{"label": n} for n in meta.channel_names]}
    ms = _ngff(meta, version)
    if version == "0.4":
        group.attrs["multiscales"] = [ms]
        if omero:
            group.attrs["omero"] = omero
    else:
        ome: dict[str, Any] = {"version": "0.5", "multiscales": [ms]}
        if omero:
            ome["omero"] = omero
        group.attrs["ome"] = ome
    return path


FLAVOURS = {
    "imagej": _imagej_tiff,
    "ome-tiff": _ome_tiff,
    "ome-zarr-0.4": lambda p, d, m: _ome_zarr(p, d, m, "0.4"),
    "ome-zarr-0.5": lambda p, d, m: _ome_zarr(p, d, m, "0.5"),
}
OUTPUTS = ["out.tif", "out.ome.tif", "out.zarr", "out.ome.zarr"]


def _same(got: ImageMetadata, want: ImageMetadata) -> None:
    assert got.axes == want.axes
    assert got.scale == pytest.approx(want.scale, rel=1e-5)
    assert got.unit == want.unit == "micrometer"
    assert got.time_unit == want.time_unit
    assert got.time_interval == want.time_interval
    assert got.channel_names == want.channel_names


@pytest.mark.parametrize("layout", ["YX", "ZYX", "TYX"])
@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_metadata_is_read_from_every_flavour(tmp_path: Path, layouts, flavour, layout) -> None:
    data, meta = layouts[layout]
    path = FLAVOURS[flavour](tmp_path, data, meta)
    back, got = load(path, with_metadata=True)
    _same(got, meta)
    np.testing.assert_array_equal(np.asarray(back), data)  # the full-resolution level


@pytest.mark.parametrize("layout", ["YX", "ZYX", "TYX"])
@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_metadata_survives_write_and_predict(
    tmp_path: Path, denoiser, layouts, flavour, layout
) -> None:
    data, meta = layouts[layout]
    path = FLAVOURS[flavour](tmp_path, data, meta)
    loaded, got = load(path, with_metadata=True)
    for name in OUTPUTS:
        write(tmp_path / "api" / name, loaded, metadata=got)
        _same(load(tmp_path / "api" / name, with_metadata=True)[1], meta)
        out = predict(denoiser, path, output=tmp_path / name, progress=False, device="cpu")
        restored, out_meta = load(out, with_metadata=True)
        assert restored.shape == data.shape
        _same(out_meta, meta)


def test_imagej_output_is_what_fiji_reads(tmp_path: Path, denoiser, layouts) -> None:
    data, meta = layouts["TYX"]
    path = _imagej_tiff(tmp_path, data, meta)
    predict(denoiser, path, output=tmp_path / "o.tif", progress=False, device="cpu")
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"  # not ZYX
        ij = tif.imagej_metadata
        assert ij["finterval"] == 0.5 and ij["unit"] == "micron"
        assert 1 / tif.pages[0].resolution[0] == pytest.approx(0.1, rel=1e-5)


def test_ome_zarr_output_layout(tmp_path: Path, denoiser, layouts) -> None:
    data, meta = layouts["TYX"]
    path = _ome_zarr(tmp_path, data, meta, "0.4")
    predict(denoiser, path, output=tmp_path / "o.ome.zarr", progress=False, device="cpu")
    attrs = json.loads((tmp_path / "o.ome.zarr" / "zarr.json").read_text())["attributes"]
    ms = attrs["ome"]["multiscales"][0]
    assert ms["axes"][0] == {"name": "t", "type": "time", "unit": "second"}
    assert ms["axes"][1]["unit"] == "micrometer"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.1, 0.1]


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_channels_and_names_survive(tmp_path: Path, layouts, flavour) -> None:
    data, meta = layouts["CZYX"]
    path = FLAVOURS[flavour](tmp_path, data, meta)
    loaded, got = load(path, with_metadata=True)
    if flavour == "imagej":  # ImageJ stores channels after Z
        meta = ImageMetadata(
            axes="ZCYX", scale=(0.29, 1.0, 0.26, 0.26), unit="um", channel_names=meta.channel_names
        )
    _same(got, meta)
    for name in OUTPUTS:
        write(tmp_path / "api" / name, loaded, metadata=got)
        back, again = load(tmp_path / "api" / name, with_metadata=True)
        _same(again, meta)
        np.testing.assert_array_equal(np.asarray(back), np.asarray(loaded))


def test_npy_and_png_outputs_keep_no_metadata(tmp_path: Path, denoiser, layouts) -> None:
    data, meta = layouts["YX"]
    path = _ome_tiff(tmp_path, data, meta)
    for name in ("o.npy", "o.png"):
        out = predict(denoiser, path, output=tmp_path / name, progress=False, device="cpu")
        back, got = load(out, with_metadata=True)
        assert back.shape == data.shape and got.scale is None and got.unit is None


def test_5d_ome_zarr_to_tiff_keeps_axes(tmp_path: Path, denoiser, layouts) -> None:
    nuclei = layouts["ZYX"][0][:2, :32, :32]
    data = np.stack([np.stack([nuclei, nuclei // 3])] * 2)  # T=2, C=2, Z=2
    meta = ImageMetadata(
        axes="TCZYX", scale=(0.5, 1.0, 0.29, 0.26, 0.26), unit="um", time_unit="second"
    )
    path = _ome_zarr(tmp_path, data, meta, "0.5")
    out = predict(denoiser, path, output=tmp_path / "o.tif", progress=False, device="cpu")
    restored, got = load(out, with_metadata=True)
    assert restored.shape == data.shape
    _same(got, meta)  # TCZYX is not an ImageJ order: an OME-TIFF, not 'QQQYX'


# --- item 2: time series and channels are restored plane by plane --------------------------


AXES_CASES = ["YX", "ZYX", "TYX", "TZYX", "CYX", "CZYX", "ZCYX", "TCZYX"]


def _build(axes: str, planes: np.ndarray) -> np.ndarray:
    """An array with ``axes`` from real planes; channel 1 is 50x brighter plus an offset."""
    shape = {"T": 2, "Z": 2, "C": 2}
    lead = [shape[a] for a in axes[:-2]]
    count = int(np.prod(lead)) if lead else 1
    arr = planes[:count].astype(np.float32).reshape(*lead, *planes.shape[-2:])
    if "C" in axes:
        index = [slice(None)] * arr.ndim
        index[axes.index("C")] = 1
        arr[tuple(index)] = arr[tuple(index)] * 50 + 1000
    return arr


@pytest.fixture(scope="module")
def planes() -> np.ndarray:
    return _crop(np.stack([fmd_frame(19, i) for i in range(8)]))[..., :48, :48]


@pytest.mark.slow
@pytest.mark.parametrize("units", ["percentile", "calibrated"])
@pytest.mark.parametrize("axes", AXES_CASES)
def test_every_layout_is_restored_channel_by_channel(denoiser, planes, axes, units) -> None:
    """Normalised and (by default) calibrated per channel: as if each were restored alone."""
    image = _build(axes, planes)
    opts = PredictOptions(axes=axes, progress=False, device="cpu", units=units)
    out = engine_predict(denoiser, image, opts)
    assert out.shape == image.shape and out.dtype == np.float32
    # Each channel, alone, restored with its own statistics over all its planes.
    ic = axes.find("C")
    for c in range(image.shape[ic] if ic >= 0 else 1):
        one = np.take(image, c, axis=ic) if ic >= 0 else image
        rest = axes.replace("C", "")
        flat = one.reshape(-1, *one.shape[-2:]) if len(rest) > 3 else one
        alone = engine_predict(denoiser, flat, replace(opts, axes=None))
        got = np.take(out, c, axis=ic) if ic >= 0 else out
        np.testing.assert_allclose(got.reshape(alone.shape), alone, rtol=1e-5, atol=1e-3)


def test_channel_selection_by_index_and_name(tmp_path: Path, denoiser, layouts) -> None:
    data, meta = layouts["CZYX"]
    path = _ome_zarr(tmp_path, data, meta, "0.5")
    opts = PredictOptions(channels=["mirrored"], progress=False, device="cpu")
    by_name = engine_predict(denoiser, str(path), opts)
    by_index = engine_predict(denoiser, str(path), replace(opts, channels=[1]))
    assert by_name.shape == (1, *data.shape[1:])
    np.testing.assert_array_equal(by_name, by_index)
    out = tmp_path / "one.ome.zarr"  # (TIFF readers drop a length-1 channel axis)
    engine_predict(denoiser, str(path), replace(opts, output=out))
    _, got = load(out, with_metadata=True)
    assert got.axes == "CZYX" and got.channel_names == ("mirrored",)
    with pytest.raises(DataError, match="no channel named 'dapi'"):
        engine_predict(denoiser, str(path), replace(opts, channels=["dapi"]))
    with pytest.raises(DataError, match="no channel axis"):
        engine_predict(denoiser, layouts["ZYX"][0], replace(opts, channels=[0]))


def test_what_cannot_be_restored_is_refused(tmp_path: Path, denoiser, planes) -> None:
    opts = PredictOptions(progress=False, device="cpu")
    # Plain arrays: 2-D/3-D as before, unless axes= names the others.
    with pytest.raises(DataError, match=r"2-D images .* and 3-D stacks"):
        engine_predict(denoiser, _build("TZYX", planes), opts)
    with pytest.raises(DataError, match="axes='ZYX' names 3 axes"):
        engine_predict(denoiser, _build("TZYX", planes), replace(opts, axes="ZYX"))
    with pytest.raises(DataError, match="neither time"):
        engine_predict(denoiser, _build("TZYX", planes), replace(opts, axes="QZYX"))
    # RGB colour photographs keep today's message.
    rgb = np.stack([planes[0], planes[1], planes[2]], axis=-1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(DataError, match=r"colour .* split the channels"):
        engine_predict(denoiser, str(tmp_path / "rgb.tif"), opts)


def test_tzyx_file_is_restored(tmp_path: Path, denoiser, planes) -> None:
    image = _build("TZYX", planes).astype(np.uint16)
    md = {"axes": "TZYX", "finterval": 2.0, "spacing": 0.3}
    tifffile.imwrite(tmp_path / "tz.tif", image, imagej=True, metadata=md)
    out = predict(denoiser, tmp_path / "tz.tif", output=tmp_path / "o.tif", progress=False)
    restored, meta = load(out, with_metadata=True)
    assert restored.shape == image.shape and meta.axes == "TZYX"
    assert meta.time_interval == 2.0 and meta.scale[1] == pytest.approx(0.3)


def test_metadata_is_json_serialisable() -> None:
    meta = ImageMetadata(
        axes="TCYX",
        scale=(0.5, 1.0, 0.1, 0.1),
        unit="µm",
        time_unit="ms",
        channel_names=["a", "b"],
    )
    assert meta.unit == "micrometer" and meta.time_unit == "millisecond"
    assert meta.time_interval == 0.5 and meta.channel_names == ("a", "b")
    assert ImageMetadata.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    squeezed = meta.squeezed((1, 1, 8, 8))  # T and C dropped: their units/names too
    assert squeezed.time_unit is None and squeezed.channel_names is None


def test_cli_restores_the_chosen_channels(tmp_path: Path, layouts) -> None:
    from debcr.cli import main

    data, meta = layouts["CZYX"]
    path = _ome_zarr(tmp_path, data, meta, "0.5")
    out = tmp_path / "out.ome.zarr"
    assert main(["predict", str(path), "-o", str(out), "--channel", "mirrored", "-q"]) == 0
    got, got_meta = load(out, with_metadata=True)
    assert got.shape == (1, *data.shape[1:]) and got_meta.channel_names == ("mirrored",)
    assert got_meta.scale == meta.scale and got_meta.unit == meta.unit
    assert main(["predict", str(path), "-o", str(tmp_path / "x.ome.zarr"), "--channel", "9"]) == 2
