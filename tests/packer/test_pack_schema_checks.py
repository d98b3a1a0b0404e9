"""Every source GeoTIFF is checked against the schema (pixel size, dtype, bands per date) before it
is packed, and `flair-pack verify` checks every member against the manifest's modality table and
the index, not only against the sample's own JSON (docs/reliability.md)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from rasterio import Affine

from packer import geotiffs, schema
from packer.cli import main
from packer.errors import PackError
from packer.index import read_index
from packer.pack import pack_dataset
from packer.verify import verify_dataset

OPTS = dict(shard_size=3_000_000, workers=1, progress=False)


@pytest.fixture
def tree(toy_tree, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(toy_tree.root, root)
    pid = sorted(toy_tree.result.patch_ids)[3]
    return root, pid


def _rewrite(path, arr, **profile_changes):
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(count=arr.shape[0], height=arr.shape[1], width=arr.shape[2], dtype=arr.dtype.name,
                   **profile_changes)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform


def half_size(path):
    """Same footprint, half the pixels: a 256x256 aerial patch at 40 cm."""
    arr, t = _read(path)
    _rewrite(path, np.ascontiguousarray(arr[:, ::2, ::2]), transform=t @ Affine.scale(2))


def to_uint16(path):
    arr, _ = _read(path)
    _rewrite(path, arr.astype(np.uint16) * 257)


@pytest.mark.parametrize("damage, problem", [
    (half_size, "wrong pixel size: 256x256 px, expected 512x512 (AERIAL_RGBI)"),
    (to_uint16, "wrong dtype: uint16, expected uint8 (AERIAL_RGBI)"),
])
def test_source_file_against_the_schema(tree, tmp_path, damage, problem, capsys, one_error_line):
    root, pid = tree
    bad = root / schema.PatchId.parse(pid).relative_path("AERIAL_RGBI")
    damage(bad)
    assert main(["--src", str(root), "--out", str(tmp_path / "fail"), "--workers", "1", "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert str(bad) in line and problem in line and pid in line
    assert not (tmp_path / "fail" / schema.MANIFEST_FILE).exists()

    summary = pack_dataset(root, tmp_path / "skip", on_error="skip", **OPTS)
    assert [(s["patch_id"], s["file"]) for s in summary.skipped] == [(pid, str(bad))]
    assert problem in summary.skipped[0]["error"]
    assert pid not in read_index(tmp_path / "skip").column("patch_id").to_pylist()
    assert verify_dataset(tmp_path / "skip").ok


def test_verify_checks_members_against_the_manifest(tree, tmp_path, monkeypatch, capsys):
    """A dataset packed without the source checks (as before them): its uint16 aerial member agrees
    with its own JSON, but not with the manifest's modality table; verify says so."""
    root, pid = tree
    to_uint16(root / schema.PatchId.parse(pid).relative_path("AERIAL_RGBI"))
    monkeypatch.setattr(geotiffs, "_check_layout", lambda patch, name, data: None)
    out = tmp_path / "o"
    pack_dataset(root, out, **OPTS)
    assert main(["verify", str(out)]) == 1
    report = capsys.readouterr().out
    assert f"{pid}.AERIAL_RGBI.npy.zst: wrong dtype: uint16, expected uint8 (AERIAL_RGBI) (manifest/index)" in report
    assert report.count("wrong ") == 1  # the other 11 patches and modalities fit
