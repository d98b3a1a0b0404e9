"""The catalog at scale gives exactly the selections of the plain row-by-row reading it replaced,
reads only the columns it needs, and leaves the class counts alone unless asked for them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from packer.schema import N_CLASSES
from tools.synth_index import generate
from trainer.data.catalog import COUNT_COLUMNS, Catalog, SelectionError
from packer.storage.read import Source, open_source


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A scaled-down synthetic FLAIR-HUB index: many domains, ROIs, shards, random class counts."""
    out = tmp_path_factory.mktemp("synth") / "index"
    generate(out, seed=1, target_shards=20, split_sizes={"train": 900, "valid": 200, "test": 300}, n_rois=30)
    return out


def reference_select(table, split, required, domains=(), patch_ids=None, contains_class=None, min_class_share=None):
    """The selection rules row by row on Python lists (how the catalog used to compute them)."""
    d = table.to_pydict()
    n = table.num_rows
    keep = [True] * n
    if split is not None:
        keep = [k and s == split for k, s in zip(keep, d["split"])]
    for name in required:
        keep = [k and name in m for k, m in zip(keep, d["modalities"])]
    if domains:
        keep = [k and (dom in domains or f"{dom}-{y:04d}" in domains) for k, dom, y in zip(keep, d["domain"], d["year"])]
    if patch_ids is not None:
        keep = [k and p in set(patch_ids) for k, p in zip(keep, d["patch_id"])]
    for task, c in (contains_class or {}).items():
        keep = [k and cnt[c] > 0 for k, cnt in zip(keep, d[COUNT_COLUMNS[task]])]
    for task, shares in (min_class_share or {}).items():
        for c, share in shares.items():
            keep = [k and cnt[c] / max(sum(cnt), 1) >= share for k, cnt in zip(keep, d[COUNT_COLUMNS[task]])]
    rows = [i for i in range(n) if keep[i]]
    paths = sorted({d["shard"][i] for i in rows})
    return {
        "patch_ids": [d["patch_id"][i] for i in rows],
        "shard": [paths.index(d["shard"][i]) for i in rows],
        "sample_index": [d["sample_index"][i] for i in rows],
        "shards": paths,
        "members": {m: ([d[f"{m}_offset"][i] for i in rows], [d[f"{m}_size"][i] for i in rows])
                    for m in ("json", *required)},
        "counts": {t: [d[c][i] for i in rows] for t, c in COUNT_COLUMNS.items()},
    }


CASES = [
    dict(split="train", required=("AERIAL_RGBI", "SENTINEL2_TS", "AERIAL_LABEL-COSIA")),
    dict(split="test", required=()),
    dict(split=None, required=("DEM_ELEV",)),
    dict(split="valid", required=("SPOT_RGBI",), contains_class={"AERIAL_LABEL-COSIA": 3}),
    dict(split="train", required=(), min_class_share={"ALL_LABEL-LPIS": {22: 0.3}, "AERIAL_LABEL-COSIA": {0: 0.05}}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_selection_equals_the_row_by_row_rules(synth, case):
    kw = dict(CASES[case])
    cat = Catalog(open_source(str(synth)))
    ref = reference_select(cat.table, **kw)
    sel = cat.select(**kw)
    assert sel.patch_ids == ref["patch_ids"]
    assert sel.shard.tolist() == ref["shard"] and sel.sample_index.tolist() == ref["sample_index"]
    assert [s.path for s in sel.shards] == ref["shards"]
    assert set(sel.members) == set(ref["members"])
    for m, (off, size) in ref["members"].items():
        assert sel.members[m][0].tolist() == off and sel.members[m][1].tolist() == size
    for task in COUNT_COLUMNS:
        assert sel.class_counts[task].tolist() == ref["counts"][task]
        assert sel.class_counts[task].shape == (len(sel), N_CLASSES[task])


def test_domain_and_patch_id_filters_equal_the_rules(synth):
    cat = Catalog(open_source(str(synth)))
    d = cat.table.to_pydict()
    dom, year = d["domain"][0], d["year"][0]
    other = next(x for x in d["domain"] if x != dom)
    for domains in ([dom], [f"{dom}-{year}"], [other, f"{dom}-{year}"]):
        assert cat.select(None, (), domains=domains).patch_ids == reference_select(cat.table, None, (), domains=domains)["patch_ids"]
    ids = d["patch_id"][5::37]
    assert cat.select("train", (), patch_ids=ids).patch_ids == reference_select(cat.table, "train", (), patch_ids=ids)["patch_ids"]
    with pytest.raises(SelectionError, match="not in the index"):
        cat.select(None, (), patch_ids=["D001-2020_XX-S1-1_1-1"])
    with pytest.raises(SelectionError, match="split 'nope' not in the index"):
        cat.select("nope", ())


class CountingSource(Source):
    """The folder read the way a remote store is (ranged reads), counting what is fetched."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.fetched = 0

    def _size(self, rel: str) -> int:
        return os.stat(os.path.join(self.base, rel)).st_size

    def _read_range(self, rel: str, start: int, length: int) -> bytes:
        self.fetched += length
        with open(os.path.join(self.base, rel), "rb") as f:
            f.seek(start)
            return f.read(length)


def test_a_remote_index_is_read_by_column(synth):
    src = CountingSource(str(synth))
    cat = Catalog(src)
    manifest_bytes = (synth / "manifest.json").stat().st_size
    sel = cat.select("train", ("AERIAL_RGBI",))
    index_bytes = (synth / "index.parquet").stat().st_size
    assert src.fetched - manifest_bytes < 0.6 * index_bytes  # not the class counts, ids of other members...
    local = Catalog(open_source(str(synth))).select("train", ("AERIAL_RGBI",))
    assert sel.patch_ids == local.patch_ids and np.array_equal(sel.members["AERIAL_RGBI"][0], local.members["AERIAL_RGBI"][0])
    before = src.fetched
    assert sel.class_counts["AERIAL_LABEL-COSIA"].shape[0] == len(sel)  # read now, on demand
    assert src.fetched > before


def test_counts_are_not_read_unless_needed(synth, monkeypatch):
    calls = []
    real = Catalog.counts
    monkeypatch.setattr(Catalog, "counts", lambda self, task: calls.append(task) or real(self, task))
    sel = Catalog(open_source(str(synth))).select("train", ("AERIAL_RGBI",))
    assert calls == [] and set(sel.class_counts) == set(COUNT_COLUMNS)
    sel.class_counts["ALL_LABEL-LPIS"]
    sel.class_counts["ALL_LABEL-LPIS"]
    assert calls == ["ALL_LABEL-LPIS"]


def test_selection_pickles_for_worker_processes(synth):
    import pickle

    sel = Catalog(open_source(str(synth))).select("valid", ("DEM_ELEV",))
    back = pickle.loads(pickle.dumps(sel))
    assert back.patch_ids == sel.patch_ids
    assert np.array_equal(back.class_counts["AERIAL_LABEL-COSIA"], sel.class_counts["AERIAL_LABEL-COSIA"])


def test_an_index_in_many_row_groups_selects_the_same(synth, tmp_path):
    """Dictionary codes differ from one row group to the next unless unified: selections must not care."""
    import shutil

    import pyarrow.parquet as pq

    shutil.copy(synth / "manifest.json", tmp_path / "manifest.json")
    pq.write_table(pq.read_table(synth / "index.parquet"), tmp_path / "index.parquet", row_group_size=97)
    assert pq.ParquetFile(tmp_path / "index.parquet").metadata.num_row_groups > 10
    one = Catalog(open_source(str(synth)))
    many = Catalog(open_source(str(tmp_path)))
    read_whole_first = Catalog(open_source(str(tmp_path)))
    read_whole_first.table  # the other path: columns cut from the whole table
    d = one.table.to_pydict()
    dom = next(x for x, s in zip(d["domain"], d["split"]) if s == "train")
    for kw in (dict(split="valid", required=("DEM_ELEV",)), dict(split="train", required=(), domains=[dom])):
        want = one.select(**kw)
        for cat in (many, read_whole_first):
            got = cat.select(**kw)
            assert got.patch_ids == want.patch_ids
            assert np.array_equal(got.shard, want.shard) and [s.path for s in got.shards] == [s.path for s in want.shards]


@pytest.mark.slow
def test_a_process_that_read_a_remote_index_exits_cleanly(synth):
    """pyarrow's threads must not read a remote (Python file) index: one still waiting for the
    interpreter lock at shutdown aborted the process ("terminate called ...") about one exit in three."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os
        from trainer.data.catalog import Catalog
        from packer.storage.read import Source

        class Remote(Source):
            def _size(self, rel):
                return os.stat(os.path.join(self.base, rel)).st_size

            def _read_range(self, rel, start, length):
                with open(os.path.join(self.base, rel), "rb") as f:
                    f.seek(start)
                    return f.read(length)

        cat = Catalog(Remote({str(synth)!r}))
        cat.select("train", ("AERIAL_RGBI",)).class_counts["AERIAL_LABEL-COSIA"]
        cat.table
        print("done")
    """)
    for _ in range(6):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-2000:]
