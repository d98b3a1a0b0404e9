"""`flair-pack inspect OUT [PATCH_ID]`: a readable summary of a dataset or of one sample.

A single sample is fetched with one ranged read (offset/size from the index), as a remote reader
would do, then decoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from packer import schema
from packer.errors import PackError
from packer.index import read_index
from packer.manifest import read_manifest
from packer.paths import check_relative_path
from packer.shardformat.columns import COUNT_COLUMNS, dates_column
from packer.shardformat.encoding import codec_summary, decode_array
from packer.shardformat.names import array_suffix_of_key, meta_member_name
from packer.shardformat.reader import array_keys, members_of_blob, raw_sample
from packer.storage.write import OutputStore, open_store


def read_sample(out: str | Path | OutputStore, row: dict) -> dict[str, bytes]:
    """All members of the sample described by index `row`, from one ranged read of its shard."""
    store = open_store(out, create=False)
    with store.open(check_relative_path(row["shard"], f"{store}/{schema.INDEX_FILE}")) as f:
        f.seek(row["offset"])
        blob = f.read(row["size"])
    return members_of_blob(blob)


def summarize_dataset(out: str | Path | OutputStore) -> str:
    store = open_store(out, create=False)
    m = read_manifest(store)
    index = read_index(store)
    p = m["parameters"]
    lines = [
        f"{out}: format {m['format_version']}, packer {m['packer_version']}, codec {codec_summary(m['codec'])}",
        f"source {p['src']} (splits from {p.get('split_source', '?')}), seed {p['seed']}, "
        f"shard size {p['shard_size'] / 1e6:.1f} MB" + (f", part {p['part']} of {p['num_parts']}" if p.get("part") is not None and p["num_parts"] > 1 else ""),
    ]
    total = sum(s["bytes"] for s in m["shards"])
    src_bytes = pc.sum(index.column("source_bytes")).as_py() or 0
    lines.append(f"{index.num_rows} samples in {len(m['shards'])} shards, {total / 1e6:.1f} MB "
                 f"(source {src_bytes / 1e6:.1f} MB, ratio {total / src_bytes if src_bytes else float('nan'):.3f})")
    for split, v in m["splits"].items():
        lines.append(f"  {split:>6}: {v['samples']} samples, {v['shards']} shards, {v['bytes'] / 1e6:.1f} MB")
    counts: dict[str, int] = {}
    for mods in index.column("modalities").to_pylist():
        for mod in mods:
            counts[mod] = counts.get(mod, 0) + 1
    lines.append("modalities present:")
    lines += [f"  {mod:<20} {counts.get(mod, 0)}/{index.num_rows}" for mod in m["modalities"]]
    for mod in schema.TIME_SERIES_MODALITIES:
        col = index.column(dates_column(mod))
        if col.null_count < len(col):
            mm = pc.min_max(col).as_py()
            lines.append(f"  T {mod:<18} {mm['min']}..{mm['max']}")
    if m["skipped"]:
        lines.append(f"skipped {len(m['skipped'])} patches:")
        lines += [f"  {s['patch_id']}: {s['file']}: {s['error']}" for s in m["skipped"]]
    return "\n".join(lines)


def _index_row(store: OutputStore, patch_id: str) -> dict:
    index = read_index(store)
    hit = index.filter(pc.equal(index.column("patch_id"), patch_id))
    if hit.num_rows == 0:
        raise PackError(patch_id, f"not in {store}/{schema.INDEX_FILE}")
    return hit.to_pylist()[0]


def plot_patch(out: str | Path | OutputStore, patch_id: str, path: str | Path) -> Path:
    """`flair-pack inspect OUT PATCH_ID --plot PATH`: every modality of the sample in one picture."""
    from packer.plot import plot_sample

    store = open_store(out, create=False)
    members = read_sample(store, _index_row(store, patch_id))
    plot_sample(raw_sample(patch_id, members, format_version=read_manifest(store)["format_version"]), path)
    return Path(path)


def describe_sample(out: str | Path | OutputStore, patch_id: str) -> str:
    store = open_store(out, create=False)
    row = _index_row(store, patch_id)
    version = read_manifest(store)["format_version"]
    members = read_sample(store, row)
    meta = json.loads(members[meta_member_name(patch_id)])
    lines = [f"{patch_id}: split {row['split']}, {row['shard']} #{row['sample_index']} "
             f"(bytes {row['offset']}..{row['offset'] + row['size']})",
             f"  crs {meta['crs']}, bounds {meta['bounds']}"]
    keys = array_keys(m[len(patch_id) + 1:] for m in members if m.startswith(patch_id + "."))
    for mod in row["modalities"]:
        key = keys[mod]
        arr = decode_array(members[f"{patch_id}.{key}"], format_version=version, suffix=array_suffix_of_key(key))
        info = meta["modalities"][mod]
        extra = f", {len(info['dates'])} dates {info['dates'][0]}..{info['dates'][-1]}" if "dates" in info else ""
        extra += f", date {info['date']}" if "date" in info else ""
        lo, hi = (arr.min(), arr.max()) if arr.size else (np.nan, np.nan)
        lines.append(f"  {mod:<20} {arr.dtype}{list(arr.shape)} min {lo} max {hi}, nodata {info['nodata']}{extra}")
        lines.append(f"  {'':<20} source {info['path']}")
    for col in COUNT_COLUMNS.values():
        if row[col] is not None:
            lines.append(f"  {col}: {row[col]}")
    return "\n".join(lines)
