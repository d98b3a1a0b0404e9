"""Split names and shard paths read from a manifest or an index are validated (packer.paths):
a crafted part, manifest or index is refused with one line by merge, verify, inspect and the
loader, and nothing is written, moved or read outside the dataset."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from packer import schema
from packer.cli import main
from packer.paths import UnsafePathError, check_relative_path, check_split_name
from packer.pack import pack_dataset

OPTS = dict(shard_size=3_000_000, workers=1, progress=False, modalities=("SPOT_RGBI", "AERIAL_LABEL-COSIA"))


@pytest.fixture(scope="module")
def parts(toy_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    for k in range(2):
        pack_dataset(toy_tree.root, root / f"part-{k}", num_parts=2, part=k, **OPTS)
    return root


@pytest.fixture
def work(parts, tmp_path):
    """Private copies of the two parts, inside a folder of their own (to see what escapes it)."""
    base = tmp_path / "deep" / "er"
    for k in range(2):
        shutil.copytree(parts / f"part-{k}", base / f"part-{k}")
    return base


def _edit_manifest(folder, fn):
    path = folder / schema.MANIFEST_FILE
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def _edit_index_shards(folder, fn):
    path = folder / schema.INDEX_FILE
    t = pq.read_table(path)
    shards = [fn(s) for s in t.column("shard").to_pylist()]
    pq.write_table(t.set_column(t.schema.get_field_index("shard"), "shard", pa.array(shards, pa.string())), path)


@pytest.mark.parametrize("name", ["../../ESCAPED", "a/b", "..", "", "/abs", "train\\x", None])
def test_bad_split_names(name):
    with pytest.raises(UnsafePathError, match="split name"):
        check_split_name(name, "m.json")


@pytest.mark.parametrize("path", ["../x.tar", "train/../../x.tar", "/etc/passwd", "C:/x.tar", "train//x.tar",
                                  "./train/x.tar", "train\\x.tar", "", None])
def test_bad_shard_paths(path):
    with pytest.raises(UnsafePathError, match="only paths inside the dataset"):
        check_relative_path(path, "m.json")
    assert check_relative_path("train/train-000000.tar", "m.json") == "train/train-000000.tar"


def test_merge_refuses_a_split_that_escapes(work, tmp_path, capsys, one_error_line):
    def escape(m):
        for s in m["shards"]:
            s["split"] = "../../ESCAPED"

    _edit_manifest(work / "part-1", escape)
    assert main(["merge", "--out", str(work / "merged"), str(work / "part-0"), str(work / "part-1")]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert "part-1" in line and "'../../ESCAPED'" in line
    assert not list(tmp_path.rglob("*ESCAPED*"))


def test_merge_move_refuses_an_absolute_shard_path(work, tmp_path, capsys, one_error_line):
    victim = tmp_path / "precious.tar"
    victim.write_bytes(b"not yours")

    def absolute(m):
        m["shards"][0]["path"] = str(victim)

    _edit_manifest(work / "part-1", absolute)
    assert main(["merge", "--mode", "move", "--out", str(work / "merged"), str(work / "part-0"),
                 str(work / "part-1")]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert str(victim) in line and "is absolute" in line
    assert victim.read_bytes() == b"not yours"


def test_merge_refuses_index_rows_outside_the_part(work, capsys, one_error_line):
    _edit_index_shards(work / "part-1", lambda s: "../../" + s)
    assert main(["merge", "--out", str(work / "merged"), str(work / "part-0"), str(work / "part-1")]) == 2
    assert "index.parquet" in one_error_line(capsys.readouterr().err, "flair-pack")


@pytest.mark.parametrize("command", [["verify"], ["inspect"], ["inspect", "PATCH"]])
def test_verify_and_inspect_refuse_a_crafted_index(work, toy_tree, command, capsys, one_error_line):
    data = work / "part-0"
    _edit_index_shards(data, lambda s: "../" + s)
    args = [command[0], str(data)] + ([sorted(toy_tree.result.patch_ids)[0]] if len(command) > 1 else [])
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert "index.parquet" in line and "'../" in line


def test_verify_refuses_a_crafted_manifest(work, capsys, one_error_line):
    _edit_manifest(work / "part-0", lambda m: m["shards"][0].update(path="/etc/hostname"))
    assert main(["verify", str(work / "part-0")]) == 2
    assert "manifest.json" in one_error_line(capsys.readouterr().err, "flair-pack")


def test_the_loader_refuses_a_crafted_index(work, tmp_path):
    from trainer.data.catalog import Catalog
    from packer.storage.read import open_source

    outside = tmp_path / "outside.tar"
    outside.write_bytes(b"\0" * 1024)
    data = work / "part-0"
    _edit_index_shards(data, lambda s: "../../../outside.tar")
    with pytest.raises(UnsafePathError, match="outside.tar"):
        Catalog(open_source(str(data)))
    _edit_index_shards(data, lambda s: "train/train-000000.tar")
    _edit_manifest(data, lambda m: m["shards"][0].update(path=str(outside)))
    with pytest.raises(UnsafePathError, match="is absolute"):
        Catalog(open_source(str(data)))
