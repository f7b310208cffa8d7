"""The store's readers on real stores ingested from the synthetic world: open_store and patch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
import zarr
from affine import Affine
from distributed import Client
from odc.geo.geobox import GeoBox

from cenlib.config import RunConfig, parse_config
from cenlib.grid import Grid, PatchKey
from cenlib.ingest.dataset import UnknownPatchError, open_store, patch
from cenlib.ingest.stage import ingest_patches
from cenlib.ingest.store import StoreError
from cenlib.stac.search import SearchRequest, search

DOLOMITES = (11.97, 46.56, 12.03, 46.61)
SAO_LUIS = (-44.39, -2.61, -44.33, -2.55)  # UTM zone 23 south; the middle patches are ok
NOWHERE = (0.5, 0.5, 0.51, 0.51)  # outside the synthetic world: a failed, all-nodata patch


@dataclass(frozen=True)
class Built:
    url: str
    keys: list[PatchKey]
    epsg: int


def _ingest(
    tmp: Path, apis: dict[str, str], client: Client, grid: Grid, keys: list[PatchKey]
) -> Built:
    interval = RunConfig().time.interval
    bbox = DOLOMITES if grid.kind == "chatearthnet" else SAO_LUIS
    s2 = search(SearchRequest(apis["earth-search"], "sentinel-2-l2a", bbox, interval)).items
    wc = search(SearchRequest(apis["planetary-computer"], "esa-worldcover", bbox)).items
    over = {"output": str(tmp / "run"), "ingest": {"shard_patches": 4}, "grid": {"kind": grid.kind}}
    summary = ingest_patches(
        parse_config(over),
        keys,
        [i.to_dict() for i in s2],
        [i.to_dict() for i in wc],
        apis,
        client,
    )
    return Built(summary.store, keys, keys[0].crs.epsg or 0)


@pytest.fixture(scope="module", params=["chatearthnet", "utm"])
def built(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    world_apis: dict[str, str],
    dask_client: Client,
) -> Built:
    grid = Grid(request.param)
    tmp = tmp_path_factory.mktemp(f"store-{request.param}")
    if grid.kind == "utm":
        ids = ("utm32723_222_3795", "utm32723_223_3795", "utm32723_222_3794", "utm32723_223_3794")
        return _ingest(tmp, world_apis, dask_client, grid, [grid.key(i) for i in ids])
    keys = [*list(grid.covering(DOLOMITES))[:6], next(iter(grid.covering(NOWHERE)))]
    return _ingest(tmp, world_apis, dask_client, grid, keys)


def _raw(url: str, name: str) -> np.ndarray[Any, Any]:
    return np.asarray(zarr.open_group(url, mode="r")[name][:])


def _ok(b: Built) -> str:
    return str(b.keys[int(np.flatnonzero(_raw(b.url, "status") == "ok")[0])].id)


def test_lazy_values_equal_the_stored_ones(built: Built) -> None:
    ds = open_store(built.url)
    assert ds.sizes["patch"] == len(built.keys) and ds.sizes["band"] == 4
    assert ds["reflectance"].dims == ("patch", "band", "y", "x")
    for name in ("reflectance", "land_cover", "scl", "status", "crs", "transform"):
        assert isinstance(ds[name].data, dask.array.Array), name
    raw = _raw(built.url, "reflectance")
    want = np.where(raw == -32768, np.nan, raw * 1e-4)
    np.testing.assert_allclose(ds["reflectance"].values, want, rtol=0, atol=1e-12)
    for name in ("land_cover", "scl", "transform", "center_lon", "cloud_fraction"):
        np.testing.assert_array_equal(ds[name].values, _raw(built.url, name))
    for name in ("patch_id", "status", "crs", "s2_items", "issues"):
        assert ds[name].values.tolist() == _raw(built.url, name).tolist()
    if built.epsg == 3857:  # the patch outside the world failed and has no data at all
        assert ds["status"].values[-1] == "failed"
        assert np.isnan(ds["reflectance"].values[-1]).all()


def test_undecoded_reflectance_is_the_stored_int16(built: Built) -> None:
    refl = open_store(built.url, mask_and_scale=False)["reflectance"]
    assert refl.dtype == np.int16 and isinstance(refl.data, dask.array.Array)
    assert refl.attrs["scale_factor"] == 1e-4 and refl.attrs["_FillValue"] == -32768
    np.testing.assert_array_equal(refl.values, _raw(built.url, "reflectance"))


def test_strings_are_python_str(built: Built) -> None:
    ds = open_store(built.url)
    for name in ("patch_id", "status", "crs", "reason", "issues", "season", "band"):
        values = ds[name].values
        assert values.dtype == object and all(type(v) is str for v in values), name
        assert values.astype(str).tolist() == values.tolist()  # StringDType refused this
    assert ds["band"].values.tolist() == ["blue", "green", "red", "nir"]
    pid = built.keys[1].id
    assert ds.sel(patch_id=pid)["patch_id"].item() == pid
    one = patch(ds, pid)
    assert type(one["patch_id"].item()) is str and type(one["status"].item()) is str


def test_crs_values_build_geoboxes(built: Built) -> None:
    ds = open_store(built.url)
    assert set(_raw(built.url, "crs").tolist()) == {f"EPSG:{built.epsg}"}  # stored right
    for i, key in enumerate(built.keys):
        crs = ds["crs"].values[i]
        assert crs == f"EPSG:{built.epsg}"
        gbox = GeoBox((key.size, key.size), Affine(*ds["transform"].values[i]), crs)
        assert gbox.crs.epsg == built.epsg
        assert gbox.affine.almost_equals(key.geobox.affine, precision=1e-6)
        assert gbox == key.geobox


def test_patch_is_georeferenced(built: Built) -> None:
    ds = open_store(built.url)
    key = built.keys[2]
    one = patch(ds, key.id)
    assert one.dims == ("band", "y", "x") and isinstance(one.data, dask.array.Array)
    assert one.rio.crs.to_epsg() == built.epsg
    assert one.rio.transform().almost_equals(key.geobox.affine, precision=1e-6)
    # x/y are pixel centres, as the GeoBox's own coordinates are.
    coords = key.geobox.coordinates
    np.testing.assert_allclose(one["x"].values, coords["x"].values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one["y"].values, coords["y"].values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(one.values, ds["reflectance"].values[2])
    labels = patch(ds, key.id, "land_cover")
    assert labels.dims == ("y", "x") and labels.rio.nodata == 0
    np.testing.assert_array_equal(labels.values, _raw(built.url, "land_cover")[2])


def test_to_raster_round_trip(built: Built, tmp_path: Path) -> None:
    ds = open_store(built.url)
    pid = _ok(built)
    i = [k.id for k in built.keys].index(pid)
    one = patch(ds, pid)
    one.rio.to_raster(tmp_path / "refl.tif")
    patch(ds, pid, "land_cover").rio.to_raster(tmp_path / "lc.tif")
    with rasterio.open(tmp_path / "refl.tif") as src:
        # Written as stored: int16 with its scale factor and fill value, so nothing is lost.
        assert src.crs.to_epsg() == built.epsg and src.count == 4
        assert src.transform.almost_equals(one.rio.transform(), precision=1e-9)
        assert src.dtypes[0] == "int16" and src.nodata == -32768 and src.scales[0] == 1e-4
        np.testing.assert_array_equal(src.read(), _raw(built.url, "reflectance")[i])
    back = rioxarray.open_rasterio(tmp_path / "refl.tif", mask_and_scale=True)
    assert isinstance(back, xr.DataArray)
    np.testing.assert_allclose(back.values, one.values, rtol=0, atol=1e-7)
    with rasterio.open(tmp_path / "lc.tif") as src:
        assert src.crs.to_epsg() == built.epsg and src.dtypes[0] == "uint8" and src.nodata == 0
        np.testing.assert_array_equal(src.read(1), _raw(built.url, "land_cover")[i])


def test_reproject_to_lonlat(built: Built) -> None:
    ds = open_store(built.url)
    pid = _ok(built)
    one = patch(ds, pid)
    lonlat = one.rio.reproject("EPSG:4326")
    assert lonlat.rio.crs.to_epsg() == 4326
    w, s, e, n = lonlat.rio.bounds()
    assert w < float(one["center_lon"]) < e and s < float(one["center_lat"]) < n
    # The warp keeps the patch's brightness (nodata stays NaN, not a number).
    assert abs(float(lonlat.mean()) - float(one.mean())) < 0.01
    labels = patch(ds, pid, "land_cover").rio.reproject("EPSG:4326")
    assert labels.dtype == np.uint8 and int(labels.max()) <= 11  # padding is 0, not 255


def test_unknown_patch_id_says_what_and_where(built: Built) -> None:
    ds = open_store(built.url)
    near = built.keys[0].id[:-1] + "7"
    with pytest.raises(KeyError) as info:
        patch(ds, near)
    msg = str(info.value)
    assert isinstance(info.value, UnknownPatchError) and isinstance(info.value, StoreError)
    assert repr(near) in msg and built.url in msg and "ds.patch_id.values" in msg
    assert "did you mean" in msg and built.keys[0].id in msg
    with pytest.raises(ValueError, match="reflectance, land_cover, scl"):
        patch(ds, built.keys[0].id, "nir")


def test_open_store_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no Zarr store at .*cen ingest"):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(StoreError, match="not written by cen ingest"):
        open_store(tmp_path / "other.zarr")
