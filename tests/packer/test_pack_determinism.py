"""Same input + same seed -> byte-identical shards, index and manifest, whatever the worker count."""

import filecmp

from packer.index import read_index
from packer.manifest import read_manifest
from packer.pack import pack_dataset


def _files(out):
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and ".pack" not in p.parts)


def _identical(a, b):
    files = _files(a)
    assert files == _files(b)
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f
    return files


def test_two_packs_and_one_vs_two_workers_are_identical(toy_tree, tmp_path):
    opts = dict(shard_size=4_000_000, seed=7, progress=False)
    pack_dataset(toy_tree.root, tmp_path / "a", workers=1, **opts)
    pack_dataset(toy_tree.root, tmp_path / "b", workers=1, **opts)
    pack_dataset(toy_tree.root, tmp_path / "c", workers=2, **opts)
    files = _identical(tmp_path / "a", tmp_path / "b")
    _identical(tmp_path / "a", tmp_path / "c")
    assert sum(str(f).endswith(".tar") for f in files) >= 4


def test_seed_shuffles_and_keep_order_sorts(toy_tree, tmp_path):
    orders = {}
    for name, opts in {"s0": dict(seed=0), "s1": dict(seed=1), "keep": dict(keep_order=True)}.items():
        pack_dataset(toy_tree.root, tmp_path / name, workers=1, progress=False, **opts)
        index = read_index(tmp_path / name)
        orders[name] = [p for p, s in zip(index.column("patch_id").to_pylist(), index.column("split").to_pylist())
                        if s == "test"]
    assert sorted(orders["s0"]) == sorted(orders["s1"]) == orders["keep"]
    assert orders["s0"] != orders["s1"]
    assert read_manifest(tmp_path / "keep")["parameters"]["keep_order"] is True


def test_rerun_of_a_finished_pack_changes_nothing(toy_tree, tmp_path):
    first = pack_dataset(toy_tree.root, tmp_path / "a", shard_size=4_000_000, workers=1, progress=False)
    pack_dataset(toy_tree.root, tmp_path / "ref", shard_size=4_000_000, workers=1, progress=False)
    again = pack_dataset(toy_tree.root, tmp_path / "a", shard_size=4_000_000, workers=1, progress=False)
    assert again.resumed_shards == first.shards and again.patches == first.patches
    _identical(tmp_path / "a", tmp_path / "ref")
