"""The README.md flair-pack writes: a Hugging Face dataset card that `datasets` understands.

`datasets.load_dataset(<output folder>, streaming=True)` must find every split's shards from the
card's `configs` and decode them with the card's declared features, also when patches lack some
modalities. Packs here use the default encoding (shard format 2: plain `.npy` in zstd).
`datasets` runs in a subprocess with the Hub switched off (offline, its cache in tmp).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from packer import schema
from packer.card import CITATION_BIBTEX, LICENSE
from packer.merge import merge_parts
from packer.pack import pack_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plain_pack(toy_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "shards"
    pack_dataset(toy_tree.root, out, shard_size=5_000_000, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def plain_pack_missing(toy_tree_missing, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card_missing") / "shards"
    pack_dataset(toy_tree_missing.root, out, shard_size=5_000_000, workers=1, progress=False)
    return out


def front_matter(card: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert m, "no YAML front matter"
    return yaml.safe_load(m.group(1))


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def run_python(code: str, cwd: Path, tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


STREAM_EVERY_SPLIT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from datasets import load_dataset

    ds = load_dataset(sys.argv[1], streaming=True)
    out = {}
    for split in ds:
        rows = list(ds[split])
        first = rows[0]
        out[split] = {
            "keys": [r["__key__"] for r in rows],
            "present": [sorted(k[:-len(".npy.zst")] for k, v in r.items() if k.endswith(".npy.zst") and v is not None)
                        for r in rows],
            "first_meta": first["json"],
            "first_aerial": {"shape": list(np.asarray(first["AERIAL_RGBI.npy.zst"]).shape),
                             "sum": int(np.asarray(first["AERIAL_RGBI.npy.zst"], dtype=np.int64).sum())},
        }
    print(json.dumps(out))
""")


def _streamed(folder: Path, tmp_path: Path) -> dict:
    return json.loads(run_python(STREAM_EVERY_SPLIT, folder, tmp_path, str(folder)).strip().splitlines()[-1])


def _index_rows(folder: Path) -> dict[str, list[dict]]:
    from packer.index import read_index

    rows: dict[str, list[dict]] = {}
    for r in read_index(folder).select(["patch_id", "split", "modalities"]).to_pylist():
        rows.setdefault(r["split"], []).append(r)
    return rows


def test_card_front_matter_is_what_the_hub_reads(plain_pack):
    card = (plain_pack / schema.CARD_FILE).read_text()
    meta = front_matter(card)
    manifest = json.loads((plain_pack / schema.MANIFEST_FILE).read_text())
    assert meta["license"] == LICENSE == "etalab-2.0"
    (config,) = meta["configs"]
    assert config["data_files"] == [{"split": s, "path": f"{s}/*.tar"} for s in ("train", "valid", "test")]
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names == ["json", *[schema.member_key(m) for m in schema.MODALITY_NAMES], "__key__", "__url__"]
    assert set(manifest["modalities"]) == set(schema.MODALITY_NAMES)
    assert meta["size_categories"] == ["n<1K"]


def test_card_human_part_describes_the_pack(plain_pack):
    card = (plain_pack / schema.CARD_FILE).read_text()
    manifest = json.loads((plain_pack / schema.MANIFEST_FILE).read_text())
    for split, v in manifest["splits"].items():
        assert re.search(rf"\| {split} \| {v['samples']} \| {v['shards']} \|", card), split
    rows = _index_rows(plain_pack)
    domains = {r["patch_id"].split("_")[0] for rs in rows.values() for r in rs}
    assert all(f"| {d} |" in card for d in domains)
    for name, info in manifest["modalities"].items():
        assert re.search(rf"\| `{re.escape(name)}` \| .* \| {info['dtype']} \|", card), name
    assert "| 7 | snow | <span style=\"color:#ffffff\">" in card  # class tables with their colours
    assert "| 22 | Background |" in card
    assert "`zstd .npy (levels " in card and "checksums xxh3_64`" in card and CITATION_BIBTEX in card
    assert "Licence Ouverte" in card


def test_datasets_streams_every_split_of_the_pack(plain_pack, tmp_path):
    from packer.shardformat.encoding import decode_array
    from packer.inspection import read_sample
    from packer.index import read_index

    streamed = _streamed(plain_pack, tmp_path)
    rows = _index_rows(plain_pack)
    assert set(streamed) == set(rows) == {"train", "valid", "test"}
    for split, got in streamed.items():
        assert sorted(got["keys"]) == sorted(r["patch_id"] for r in rows[split]), split
    # The arrays are the packed ones.
    first = streamed["train"]["keys"][0]
    row = [r for r in read_index(plain_pack).to_pylist() if r["patch_id"] == first][0]
    aerial = decode_array(read_sample(plain_pack, row)[schema.member_name(first, "AERIAL_RGBI")])
    assert streamed["train"]["first_aerial"] == {"shape": list(aerial.shape), "sum": int(aerial.astype("int64").sum())}
    assert streamed["train"]["first_meta"]["patch_id"] == first


def test_datasets_streams_patches_lacking_modalities(plain_pack_missing, tmp_path):
    """Without the card's declared features, `datasets` infers a schema from the first samples and
    fails as soon as two of them have different modalities."""
    streamed = _streamed(plain_pack_missing, tmp_path)
    rows = _index_rows(plain_pack_missing)
    assert any(len(r["modalities"]) < len(schema.MODALITY_NAMES) for rs in rows.values() for r in rs)
    for split, got in streamed.items():
        by_id = {r["patch_id"]: sorted(r["modalities"]) for r in rows[split]}
        assert {k: p for k, p in zip(got["keys"], got["present"])} == by_id, split


def test_the_card_snippets_run(plain_pack, tmp_path):
    card = (plain_pack / schema.CARD_FILE).read_text()
    blocks = python_blocks(card)
    assert len(blocks) == 4  # webdataset, datasets, flair-stream, geopandas
    # The webdataset snippet's handler really decodes (a handler that matches no key leaves bytes).
    blocks[0] += "assert isinstance(aerial, np.ndarray) and aerial.dtype == np.uint8, type(aerial)\n"
    for code in blocks:
        code = code.replace("<this folder or owner/repo>", str(plain_pack))
        code = code.replace("<this folder, s3://..., https://... or hf://datasets/owner/repo>", ".")
        run_python(code, plain_pack, tmp_path)


# --- a --shuffle pack (format 3): its .npy.blosc members ------------------------------------------
STREAM_SHUFFLED = textwrap.dedent("""
    import io, json, sys
    import numcodecs.blosc
    import numpy as np
    from datasets import load_dataset

    ds = load_dataset(sys.argv[1], streaming=True)
    out = {}
    for split in ds:
        for r in ds[split]:
            arrays = {}
            for k, v in r.items():
                if k.endswith(".npy.blosc") and v is not None:  # handed out as bytes: numcodecs decodes them
                    a = np.load(io.BytesIO(numcodecs.blosc.decompress(v)), allow_pickle=False)
                elif k.endswith(".npy.zst") and v is not None:
                    a = np.asarray(v)
                else:
                    continue
                arrays[k] = [list(a.shape), str(a.dtype), float(a.astype(np.float64).sum())]
            out[r["__key__"]] = arrays
    print(json.dumps(out))
""")


def test_a_shuffled_pack_streams_in_datasets_with_its_blosc_members_as_bytes(shuffled_shards, tmp_path):
    from packer.shardformat.encoding import SHUFFLE_SETTINGS
    from trainer.data.dataset import open_dataset

    card = (shuffled_shards.out / schema.CARD_FILE).read_text()
    features = {f["name"]: f for f in front_matter(card)["dataset_info"]["features"]}
    for m in schema.MODALITY_NAMES:
        if m in SHUFFLE_SETTINGS:
            assert features[f"{m}.npy.blosc"]["dtype"] == "binary"
        else:
            assert f"{m}.npy.zst" in features
    streamed = json.loads(run_python(STREAM_SHUFFLED, shuffled_shards.out, tmp_path, str(shuffled_shards.out))
                          .strip().splitlines()[-1])
    ds = open_dataset(shuffled_shards.out)
    assert set(streamed) == set(ds.patch_ids(None))
    for pid, arrays in streamed.items():
        want = ds[pid]["arrays"]
        suffixes = {k.split(".", 1)[0]: k for k in arrays}
        assert set(suffixes) == set(want), pid
        for m, arr in want.items():
            shape, _, total = arrays[suffixes[m]]
            assert shape == list(arr.shape) and total == float(arr.astype("float64").sum()), (pid, m)
        assert {m for m, k in suffixes.items() if k.endswith(".npy.blosc")} == set(SHUFFLE_SETTINGS) & set(want)


def test_the_card_snippets_of_a_shuffled_pack_run(shuffled_shards, tmp_path):
    card = (shuffled_shards.out / schema.CARD_FILE).read_text()
    blocks = python_blocks(card)
    assert len(blocks) == 5  # webdataset, its .npy.blosc handler, datasets, flair-stream, geopandas
    assert "numcodecs.blosc.decompress" in blocks[1] and "flair-pack --shuffle" in card
    # The Blosc snippet goes on from the webdataset one (its handler and `urls`); its last sample's
    # elevation is the packed array.
    check = textwrap.dedent("""
        import flair_stream
        want = flair_stream.open_dataset(".")[sample["__key__"]]["arrays"]["DEM_ELEV"]
        assert isinstance(dem, np.ndarray) and dem.dtype == want.dtype and dem.tobytes() == want.tobytes()
    """)
    run_python(blocks[0] + blocks[1] + check, shuffled_shards.out, tmp_path)


def test_merge_writes_the_card_of_the_whole(toy_tree, tmp_path):
    parts = []
    for k in range(2):
        out = tmp_path / f"part-{k}"
        pack_dataset(toy_tree.root, out, num_parts=2, part=k, workers=1, progress=False)
        parts.append(out)
        assert "of 2" in (out / schema.CARD_FILE).read_text()  # each part has its own card
    merged = merge_parts(tmp_path / "all", parts)
    card = (tmp_path / "all" / schema.CARD_FILE).read_text()
    assert f"This copy holds {merged['index']['rows']} patches" in card
    assert "| parts | `2 (merged)` |" in card
    assert front_matter(card)["configs"][0]["data_files"][0] == {"split": "train", "path": "train/*.tar"}
    streamed = _streamed(tmp_path / "all", tmp_path)
    assert sum(len(v["keys"]) for v in streamed.values()) == merged["index"]["rows"]
