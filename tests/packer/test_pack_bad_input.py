"""Bad input gives a message naming the file and the problem; `fail` writes nothing inconsistent,
`skip` packs the rest and lists the bad patch."""

import shutil

import numpy as np
import pyogrio.raw
import pytest
import rasterio

from packer import schema
from packer.cli import main
from packer.errors import PackError
from packer.index import read_index
from packer.manifest import read_manifest
from packer.pack import STATE_DIR, pack_dataset
from packer.verify import verify_dataset

OPTS = dict(shard_size=3_000_000, workers=1, progress=False)


@pytest.fixture
def tree(toy_tree, tmp_path):
    """A private copy of the shared toy tree that a test may damage."""
    root = tmp_path / "src"
    shutil.copytree(toy_tree.root, root)
    return root, toy_tree.result


def _victim(result) -> str:
    return sorted(result.patch_ids)[3]


def _assert_nothing_inconsistent(out):
    assert not (out / schema.MANIFEST_FILE).exists() and not (out / schema.INDEX_FILE).exists()
    assert not list(out.rglob("*.partial")) if out.exists() else True
    for tar in out.rglob("*.tar") if out.exists() else []:
        assert (out / STATE_DIR / f"{tar.stem}.json").is_file(), f"{tar} has no completion record"


def _assert_skipped(out, summary, pid, fragment):
    assert [s["patch_id"] for s in summary.skipped] == [pid]
    assert fragment in summary.skipped[0]["error"] and pid in str(summary)
    assert [s["patch_id"] for s in read_manifest(out)["skipped"]] == [pid]
    ids = read_index(out).column("patch_id").to_pylist()
    assert pid not in ids and len(ids) == 11
    assert verify_dataset(out).ok


def _assert_fails_then_skips(root, tmp_path, pid, bad, problem):
    """`--on-error fail` stops naming the file and the problem; `skip` packs the rest."""
    with pytest.raises(PackError) as err:
        pack_dataset(root, tmp_path / "fail", **OPTS)
    assert bad.name in str(err.value) and problem in str(err.value)
    _assert_nothing_inconsistent(tmp_path / "fail")
    summary = pack_dataset(root, tmp_path / "skip", on_error="skip", **OPTS)
    _assert_skipped(tmp_path / "skip", summary, pid, problem)


def _rewrite(path, fn):
    with rasterio.open(path) as src:
        profile, arr = src.profile, src.read()
    arr = fn(arr)
    profile.update(count=arr.shape[0])
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)


def test_truncated_geotiff(tree, tmp_path):
    root, result = tree
    pid = _victim(result)
    bad = root / schema.PatchId.parse(pid).relative_path("AERIAL_RGBI")
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    _assert_fails_then_skips(root, tmp_path, pid, bad, "unreadable GeoTIFF")


@pytest.mark.parametrize("modality", ["SENTINEL2_TS", "SPOT_RGBI", "SENTINEL2_MSK-SC"])
def test_wrong_band_count(tree, tmp_path, modality):
    root, result = tree
    pid = _victim(result)
    bad = root / schema.PatchId.parse(pid).relative_path(modality)
    _rewrite(bad, lambda a: a[:-1])
    _assert_fails_then_skips(root, tmp_path, pid, bad, "wrong band count")


def test_footprint_mismatch(tree, tmp_path):
    root, result = tree
    pid = _victim(result)
    bad = root / schema.PatchId.parse(pid).relative_path("SPOT_RGBI")
    with rasterio.open(bad, "r+") as dst:
        dst.transform = dst.transform @ rasterio.Affine.translation(3, 0)
    summary = pack_dataset(root, tmp_path / "skip", on_error="skip", **OPTS)
    _assert_skipped(tmp_path / "skip", summary, pid, "footprint")


def test_patch_without_dates(tree, tmp_path):
    root, result = tree
    pid = _victim(result)
    path = root / schema.GLOBAL_MTD_FOLDER / schema.SENTINEL_DATES_FILES["SENTINEL2_TS"]
    meta, _, geometry, fields = pyogrio.raw.read(path)
    keep = fields[0] != pid
    path.unlink()
    pyogrio.raw.write(path, geometry[keep], [f[keep] for f in fields], meta["fields"], driver="GPKG",
                      geometry_type=meta["geometry_type"], crs=meta["crs"])
    with pytest.raises(PackError) as err:
        pack_dataset(root, tmp_path / "fail", **OPTS)
    assert pid in str(err.value) and path.name in str(err.value) and "no acquisition dates" in str(err.value)
    assert not (tmp_path / "fail").exists()  # found during discovery: nothing written at all
    summary = pack_dataset(root, tmp_path / "skip", on_error="skip", **OPTS)
    _assert_skipped(tmp_path / "skip", summary, pid, "no acquisition dates")


def test_missing_metadata_file(tree, tmp_path, capsys):
    root, _ = tree
    missing = root / schema.GLOBAL_MTD_FOLDER / schema.SENTINEL_DATES_FILES["SENTINEL1-ASC_TS"]
    missing.unlink()
    rc = main(["--src", str(root), "--out", str(tmp_path / "o"), "--on-error", "skip", "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and missing.name in err and "metadata file missing" in err
    assert not (tmp_path / "o").exists()
    # Without the series that needs it, the same tree packs.
    mods = ",".join(m for m in schema.MODALITY_NAMES if m != "SENTINEL1-ASC_TS")
    assert main(["--src", str(root), "--out", str(tmp_path / "o2"), "--modalities", mods, "--no-progress", "--workers", "1"]) == 0


def test_empty_or_wrong_src(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    for src, fragment in [(tmp_path / "nope", "not a directory"), (tmp_path / "empty", "is empty"),
                          (tmp_path / "other", "no FLAIR-HUB patch files")]:
        assert main(["--src", str(src), "--out", str(tmp_path / "o"), "--no-progress", "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert str(src) in err and fragment in err, err
    assert not (tmp_path / "o").exists()


def test_bad_options_name_the_option(toy_tree, tmp_path):
    for opts, name in [(dict(modalities=("AERIAL",)), "--modalities"), (dict(shard_size=0), "--shard-size"),
                       (dict(level=30), "--level"), (dict(num_parts=2, part=2), "--part"),
                       (dict(on_error="ignore"), "--on-error"), (dict(workers=0), "--workers")]:
        with pytest.raises(PackError, match=name):
            pack_dataset(toy_tree.root, tmp_path / "o", **opts)


def test_label_value_outside_classes(tree, tmp_path):
    root, result = tree
    pid = _victim(result)
    bad = root / schema.PatchId.parse(pid).relative_path("AERIAL_LABEL-COSIA")
    _rewrite(bad, lambda a: np.where(a == a.flat[0], 200, a).astype(a.dtype))
    summary = pack_dataset(root, tmp_path / "skip", on_error="skip", **OPTS)
    _assert_skipped(tmp_path / "skip", summary, pid, "label value 200")


def test_without_split_file_everything_is_train(tree, tmp_path):
    root, _ = tree
    (root / schema.GLOBAL_MTD_FOLDER / schema.SPLIT_FILE).unlink()
    summary = pack_dataset(root, tmp_path / "o", **OPTS)
    assert summary.splits == {"train": 12}
    assert read_manifest(tmp_path / "o")["parameters"]["split_source"] == "default"
    with pytest.raises(PackError, match=schema.SPLIT_FILE):
        pack_dataset(root, tmp_path / "o2", split_column="split_2", **OPTS)


def test_errors_survive_pickling():
    """Workers return PatchErrors to the writer process: they must unpickle with their fields."""
    import pickle

    from packer.errors import PatchError

    err = pickle.loads(pickle.dumps(PatchError("D001-2019_AA-S1-1_1-1", "/x/a.tif", "wrong band count")))
    assert (err.patch_id, err.path, err.problem) == ("D001-2019_AA-S1-1_1-1", "/x/a.tif", "wrong band count")
    again = pickle.loads(pickle.dumps(PackError("--level", "must be 1..22")))
    assert str(again) == "--level: must be 1..22"


def test_bad_patch_with_two_workers(tree, tmp_path):
    """The multi-process path reports and skips a bad patch exactly like the single-process one."""
    root, result = tree
    pid = _victim(result)
    bad = root / schema.PatchId.parse(pid).relative_path("SENTINEL2_TS")
    _rewrite(bad, lambda a: a[:-1])
    opts = dict(OPTS, workers=2)
    with pytest.raises(PackError) as err:
        pack_dataset(root, tmp_path / "fail", **opts)
    assert bad.name in str(err.value) and "wrong band count" in str(err.value)
    _assert_nothing_inconsistent(tmp_path / "fail")
    summary = pack_dataset(root, tmp_path / "skip", on_error="skip", **opts)
    _assert_skipped(tmp_path / "skip", summary, pid, "wrong band count")
