"""The GeoTIFF pair of a Dolomites patch read back with rioxarray and rasterio: grid, values,
nodata, band descriptions, scale, colour map, COG layout, windowed (TorchGeo-style) reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.merge
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.windows import Window, from_bounds
from rio_cogeo.cogeo import cog_validate

from cenlib.classes import CLASSES, palette_rgb
from cenlib.export.geotiff import GeoTiffError, geotiff_bytes, label_tiff_bytes
from cenlib.grid import Grid

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
KEY = Grid().at(11.85, 46.55)  # near the Sella group, Dolomites
TRANSFORM = list(KEY.geobox.affine)[:6]


@pytest.fixture(scope="module")
def refl() -> np.ndarray:
    a = np.random.default_rng(7).integers(0, 10000, (len(BANDS), 256, 256), dtype=np.int16)
    a[:, :8, :8] = -32768  # a nodata corner
    return a


@pytest.fixture(scope="module")
def land_cover() -> np.ndarray:
    return np.random.default_rng(8).integers(0, len(CLASSES), (256, 256), dtype=np.uint8)


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, refl: np.ndarray, land_cover: np.ndarray
) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("geotiff")
    tif, label = d / f"{KEY.id}.tif", d / f"{KEY.id}_label.tif"
    tif.write_bytes(geotiff_bytes(refl, BANDS, "EPSG:3857", TRANSFORM))
    label.write_bytes(label_tiff_bytes(land_cover, "EPSG:3857", TRANSFORM))
    return tif, label


def _open(path: Path, *, masked: bool) -> xr.DataArray:
    da = rioxarray.open_rasterio(path, mask_and_scale=masked)
    assert isinstance(da, xr.DataArray)
    return da


def test_reflectance_round_trip_rioxarray(files: tuple[Path, Path], refl: np.ndarray) -> None:
    da = _open(files[0], masked=False)
    assert da.rio.crs.to_epsg() == 3857
    assert da.rio.transform() == Affine(*TRANSFORM)
    assert da.rio.nodata == -32768
    assert da.dtype == np.int16
    np.testing.assert_array_equal(da.values, refl)
    assert list(da.attrs["long_name"]) == BANDS
    assert da.attrs["scale_factor"] == pytest.approx(1e-4)
    # Masked and scaled, GIS-style: reflectance, NaN where there was no data.
    r = _open(files[0], masked=True)
    assert np.isnan(r.values[:, :8, :8]).all()
    np.testing.assert_allclose(r.values[:, 8:, 8:], refl[:, 8:, 8:] * 1e-4, rtol=1e-6)


def test_reflectance_metadata_and_layout(files: tuple[Path, Path]) -> None:
    with rasterio.open(files[0]) as src:
        assert src.descriptions == tuple(BANDS)
        assert src.scales == (1e-4,) * len(BANDS) and src.offsets == (0.0,) * len(BANDS)
        assert src.nodata == -32768 and src.compression.name == "deflate"
        assert src.block_shapes[0] == (256, 256)  # one block per patch, no overviews needed
        assert src.overviews(1) == []
    valid, errors, _ = cog_validate(str(files[0]))
    assert valid, errors


def test_label_round_trip_with_palette(files: tuple[Path, Path], land_cover: np.ndarray) -> None:
    da = _open(files[1], masked=False)
    assert da.rio.crs.to_epsg() == 3857 and da.rio.transform() == Affine(*TRANSFORM)
    assert da.rio.nodata == 0
    np.testing.assert_array_equal(da.values[0], land_cover)
    with rasterio.open(files[1]) as src:
        assert src.dtypes == ("uint8",)
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
        cmap = src.colormap(1)
        for c, rgb in zip(CLASSES, palette_rgb(), strict=True):
            assert cmap[c.index] == (*map(int, rgb), 0 if c.index == 0 else 255)
        assert {k: v for k, v in src.tags().items() if k.startswith("class_")} == {
            f"class_{c.index}": c.name for c in CLASSES
        }
    valid, errors, _ = cog_validate(str(files[1]))
    assert valid, errors


def test_windowed_reads_like_torchgeo(files: tuple[Path, Path], refl: np.ndarray) -> None:
    with rasterio.open(files[0]) as src:
        win = Window(64, 32, 100, 120)
        np.testing.assert_array_equal(src.read(window=win), refl[:, 32:152, 64:164])
        # TorchGeo samples by map bounds: window from bounds, then merge onto a query grid.
        left, top = src.transform * (64, 32)
        right, bottom = src.transform * (164, 152)
        bw = from_bounds(left, bottom, right, top, src.transform).round_offsets().round_lengths()
        assert (bw.col_off, bw.row_off, bw.width, bw.height) == (64, 32, 100, 120)
        mosaic, out_t = rasterio.merge.merge([src], bounds=(left, bottom, right, top))
    np.testing.assert_array_equal(mosaic, refl[:, 32:152, 64:164])
    assert out_t == src.transform * Affine.translation(64, 32)
    with rasterio.open(files[1]) as src:
        assert src.read(1, window=Window(0, 0, 16, 16)).shape == (16, 16)


def test_same_inputs_same_bytes(refl: np.ndarray, land_cover: np.ndarray) -> None:
    assert geotiff_bytes(refl, BANDS, "EPSG:3857", TRANSFORM) == geotiff_bytes(
        refl, BANDS, "EPSG:3857", TRANSFORM
    )
    assert label_tiff_bytes(land_cover, "EPSG:3857", TRANSFORM) == label_tiff_bytes(
        land_cover, "EPSG:3857", TRANSFORM
    )


def test_bad_inputs_say_what_is_wrong(refl: np.ndarray, land_cover: np.ndarray) -> None:
    with pytest.raises(GeoTiffError, match="6 bands"):
        geotiff_bytes(refl[:5], BANDS, "EPSG:3857", TRANSFORM)
    with pytest.raises(GeoTiffError, match="int16"):
        geotiff_bytes(refl.astype(np.float32), BANDS, "EPSG:3857", TRANSFORM)
    with pytest.raises(GeoTiffError, match="class 12"):
        label_tiff_bytes(np.full((4, 4), 12, np.uint8), "EPSG:3857", TRANSFORM)
