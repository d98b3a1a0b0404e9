"""The public API: `flair_stream.open_dataset(url)` on a folder, s3://, https:// and hf://.

Raw samples are the GeoTIFFs' arrays bit for bit, random access and selections come from the
index, reading raw samples never imports torch (checked in a fresh interpreter), and without
pyarrow the same samples stream from the shards with numpy + zstandard alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio

import flair_stream
from packer import schema
from packer.pack import pack_dataset
from trainer.data.catalog import SelectionError

REPO = Path(__file__).resolve().parents[2]
PAIR = ["AERIAL_RGBI", "AERIAL_LABEL-COSIA"]


def tif(tree, patch_id: str, modality: str) -> np.ndarray:
    with rasterio.open(tree.result.path(patch_id, modality)) as src:
        return src.read()


def digest(samples) -> dict[str, dict[str, str]]:
    """patch id -> modality -> a content digest (to compare two ways of reading)."""
    import hashlib

    return {s["patch_id"]: {m: hashlib.sha1(a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()).hexdigest()
                            for m, a in s["arrays"].items()} for s in samples}


def test_three_lines_give_the_geotiff_arrays(toy_shards):
    ds = flair_stream.open_dataset(toy_shards.out)
    tree = toy_shards.tree
    got = list(ds.samples("train", modalities=PAIR))
    assert [s["patch_id"] for s in got] == ds.patch_ids("train")
    assert sorted(s["patch_id"] for s in got) == sorted(tree.result.ids_of("train"))
    for s in got:
        assert set(s["arrays"]) == set(PAIR)
        for m in PAIR:
            np.testing.assert_array_equal(s["arrays"][m], tif(tree, s["patch_id"], m))
            assert s["arrays"][m].dtype == schema.MODALITIES[m].np_dtype
        assert s["meta"]["patch_id"] == s["patch_id"] and s["meta"]["split"] == "train"
        assert s["meta"]["crs"] == "EPSG:2154" and len(s["meta"]["bounds"]) == 4


def test_length_index_and_random_access(toy_shards):
    ds = flair_stream.open_dataset(str(toy_shards.out))
    manifest = json.loads((toy_shards.out / schema.MANIFEST_FILE).read_text())
    assert len(ds) == manifest["index"]["rows"] == ds.index.num_rows
    assert ds.splits == {s: manifest["splits"][s]["samples"] for s in ("train", "valid", "test")}
    assert ds.modalities == list(schema.MODALITY_NAMES)
    assert isinstance(ds.index, pa.Table) and "geometry" in ds.index.column_names
    pid = ds.patch_ids("test")[-1]
    assert pid in ds and "D000-2000_X_1-1" not in ds
    full = ds[pid]
    assert set(full["arrays"]) == set(schema.MODALITY_NAMES)
    for m in ("DEM_ELEV", "SENTINEL2_TS", "ALL_LABEL-LPIS"):
        np.testing.assert_array_equal(full["arrays"][m], tif(toy_shards.tree, pid, m))
    only = ds.sample(pid, ["SPOT_RGBI"])
    assert set(only["arrays"]) == {"SPOT_RGBI"}
    np.testing.assert_array_equal(only["arrays"]["SPOT_RGBI"], full["arrays"]["SPOT_RGBI"])
    assert full["meta"]["modalities"]["SENTINEL2_TS"]["dates"] == only["meta"]["modalities"]["SENTINEL2_TS"]["dates"]
    with pytest.raises(KeyError, match="not in"):
        ds["D000-2000_X_1-1"]
    assert "12 samples" in repr(ds) or f"{len(ds)} samples" in repr(ds)


def test_selections_are_the_loaders(toy_shards):
    ds = flair_stream.open_dataset(toy_shards.out)
    index = ds.index.to_pylist()
    domain = index[0]["domain"]
    by_domain = [s["patch_id"] for s in ds.samples(None, ["DEM_ELEV"], domains=[domain])]
    assert by_domain == [r["patch_id"] for r in index if r["domain"] == domain]
    year = f"{domain}-{index[0]['year']:04d}"
    assert [s["patch_id"] for s in ds.samples(None, ["DEM_ELEV"], domains=[year])] == by_domain
    water = [r["patch_id"] for r in index if r["cosia_counts"][6] > 0]
    assert water and len(water) < len(index)
    got = [s["patch_id"] for s in ds.samples(None, ["AERIAL_LABEL-COSIA"], contains_class={"AERIAL_LABEL-COSIA": 6})]
    assert got == water
    shares = {r["patch_id"]: r["cosia_counts"][12] / sum(r["cosia_counts"]) for r in index}  # deciduous
    threshold = float(np.median(list(shares.values())))
    got = ds.samples(None, ["AERIAL_LABEL-COSIA"], min_class_share={"AERIAL_LABEL-COSIA": {12: threshold}})
    kept = []
    for s in got:
        assert (s["arrays"]["AERIAL_LABEL-COSIA"] == 12).mean() >= threshold
        kept.append(s["patch_id"])
    assert kept == [p for p, v in shares.items() if v >= threshold] and 0 < len(kept) < len(index)
    two = ds.patch_ids()[:2]
    assert [s["patch_id"] for s in ds.samples(None, patch_ids=two)] == two
    with pytest.raises(KeyError, match="unknown modality"):
        ds.samples("train", ["AERIAL_RGB"])
    with pytest.raises(SelectionError, match="split 'nope'"):
        ds.samples("nope", PAIR)


def test_a_modality_the_pack_lacks_is_named(toy_tree, tmp_path):
    out = tmp_path / "aerial_only"
    pack_dataset(toy_tree.root, out, modalities=PAIR, workers=1, progress=False)
    ds = flair_stream.open_dataset(out)
    assert ds.modalities == PAIR
    with pytest.raises(SelectionError, match=r"the dataset has no SENTINEL2_TS \(packed: AERIAL_RGBI, AERIAL_LABEL-COSIA\)"):
        ds.samples("train", ["AERIAL_RGBI", "SENTINEL2_TS"])
    # ... and so is the training stream of a config that needs it (instead of "no sample matches").
    with pytest.raises(SelectionError, match="the dataset has no SENTINEL2_TS, SENTINEL2_MSK-SC"):
        ds.loader("train", config="LC-D")


def test_every_url_scheme_gives_the_same_samples(toy_shards, s3_server, s3_upload, http_server, monkeypatch):
    local = digest(flair_stream.open_dataset(toy_shards.out).samples("test", PAIR))
    s3_upload(toy_shards.out, "flair", "hub")
    assert digest(flair_stream.open_dataset("s3://flair/hub", s3_endpoint_url=s3_server).samples("test", PAIR)) == local
    base, handler = http_server
    assert digest(flair_stream.open_dataset(f"{base}/plain").samples("test", PAIR)) == local
    monkeypatch.setenv("HF_ENDPOINT", base)
    hub = flair_stream.open_dataset("hf://datasets/IGNF/flair-shards@v1")
    assert digest(hub.samples("test", PAIR)) == local
    pid = next(iter(local))
    assert digest([hub[pid]])[pid]["AERIAL_RGBI"] == local[pid]["AERIAL_RGBI"]


def _fresh_python(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_raw_reading_never_imports_torch(toy_shards, tmp_path):
    out = _fresh_python(f"""
        import json, sys
        import flair_stream
        ds = flair_stream.open_dataset({str(toy_shards.out)!r})
        n = sum(1 for _ in ds.samples("train", modalities={PAIR!r}))
        pid = ds.patch_ids("test")[0]
        full = ds[pid]
        print(json.dumps({{"n": n, "full": sorted(full["arrays"]), "torch": "torch" in sys.modules,
                           "heavy": sorted(m for m in ("torch", "torchvision", "timm", "accelerate") if m in sys.modules)}}))
    """, tmp_path)
    doc = json.loads(out)
    assert doc["n"] == len(toy_shards.tree.result.ids_of("train")) and len(doc["full"]) == len(schema.MODALITY_NAMES)
    assert doc["torch"] is False and doc["heavy"] == []


def test_without_pyarrow_samples_stream_from_the_shards(toy_shards, tmp_path):
    """A light install (numpy + zstandard): every other dependency is made unimportable; the
    samples equal those of the index path."""
    want = digest(flair_stream.open_dataset(toy_shards.out).samples("train", PAIR))
    want_all = digest(flair_stream.open_dataset(toy_shards.out).samples("test"))
    out = _fresh_python(f"""
        import hashlib, json, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "pyarrow", "pandas", "rasterio", "matplotlib", "PIL", "s3fs",
                                          "fsspec", "requests", "yaml", "tqdm", "webdataset"):
                    raise ImportError("blocked for the test: " + name)

        sys.meta_path.insert(0, Block())
        import flair_stream

        def digest(samples):
            return {{s["patch_id"]: {{m: hashlib.sha1(a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()).hexdigest()
                                     for m, a in s["arrays"].items()}} for s in samples}}

        ds = flair_stream.open_dataset({str(toy_shards.out)!r})
        pair = digest(ds.samples("train", modalities={PAIR!r}))
        everything = digest(ds.samples("test"))
        try:
            ds.index
            index_error = None
        except ImportError as exc:
            index_error = str(exc)
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"numpy", "zstandard", "pyarrow", "torch"}})
        print(json.dumps({{"pair": pair, "all": everything, "index_error": index_error, "loaded": loaded}}))
    """, tmp_path)
    doc = json.loads(out)
    assert doc["pair"] == want and doc["all"] == want_all
    assert "needs pyarrow" in doc["index_error"]
    assert doc["loaded"] == ["numpy", "zstandard"]


def test_loader_gives_the_training_stream(toy_shards):
    import torch

    ds = flair_stream.open_dataset(toy_shards.out)
    loader = ds.loader("train", config=REPO / "configs" / "seed" / "LC-D.yaml", batch_size=2)
    assert loader.batch_size == 2 and len(loader.selection) == len(ds.patch_ids("train"))
    batch = next(iter(loader))
    inputs = loader.to_model_inputs(batch)
    assert inputs["AERIAL_RGBI"].shape == (2, 3, 512, 512) and inputs["AERIAL_RGBI"].dtype == torch.float32
    assert inputs["SENTINEL2_TS"].shape[:1] == (2,) and inputs["AERIAL_LABEL-COSIA"].dtype == torch.int64
    # The same by built-in name, with --set style overrides.
    loader = ds.loader("valid", config="LC-D", overrides=["modalities.inputs.SENTINEL2_TS=false"], batch_size=1)
    first = next(iter(loader))
    assert "SENTINEL2_TS" not in first and first["AERIAL_RGBI"].shape[0] == 1


def test_every_export_is_the_object_it_names():
    """`flair_stream.builtin_configs` is the function (not its module of the same name); `schema` the module."""
    import inspect

    import flair_stream

    assert callable(flair_stream.builtin_configs) and "LC-A" in flair_stream.builtin_configs()
    assert flair_stream.schema is schema
    for name in flair_stream.__all__:
        obj = getattr(flair_stream, name)
        assert name in ("__version__", "schema") or not inspect.ismodule(obj), name
