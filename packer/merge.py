"""`flair-pack merge`: join the outputs of `--num-parts N --part K` runs into one dataset.

Shards are renumbered per split (part 0's first, then part 1's, ...) and hard-linked into the
merged folder (copied when the folders sit on different file systems), so no shard is rewritten and
every sha256 stays valid; index rows are re-pointed to the new names. The parts' manifests and
indexes are read through `read_manifest` / `read_index`, which refuse split names and shard paths
that would reach outside a part or the output (`packer.paths`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from packer import schema
from packer.atomic import write_text_atomic
from packer.card import dataset_card
from packer.errors import PackError
from packer.index import read_index, write_index
from packer.manifest import file_sha256, read_manifest, write_manifest
from packer.pack import split_order

MODES = ("link", "copy", "move")


def _place(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    if mode == "move":
        os.replace(src, tmp)
    elif mode == "link":
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links unsupported
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_parts(out: str | os.PathLike, parts: list[str | os.PathLike], mode: str = "link") -> dict:
    """Merge part outputs into `out`; returns the merged manifest."""
    if mode not in MODES:
        raise PackError("--mode", f"must be one of {MODES}, got {mode!r}")
    out = Path(out)
    if (out / schema.MANIFEST_FILE).exists():
        raise PackError(out, "already holds a dataset; merge into a new folder")
    loaded = []
    for p in parts:
        try:
            loaded.append((Path(p), read_manifest(p)))
        except FileNotFoundError as exc:
            raise PackError(p, f"not a finished part ({exc})") from None
    loaded.sort(key=lambda pm: pm[1]["parameters"]["part"])
    ref = loaded[0][1]
    n_parts = ref["parameters"]["num_parts"]

    def comparable(params: dict) -> dict:
        return {k: v for k, v in params.items() if k != "part"}

    for path, m in loaded:
        if m["format_version"] != ref["format_version"] or comparable(m["parameters"]) != comparable(ref["parameters"]):
            raise PackError(path, "was packed with other options than the first part; parts must differ only in --part")
    got = [m["parameters"]["part"] for _, m in loaded]
    if got != list(range(n_parts)):
        missing = sorted(set(range(n_parts)) - set(got))
        raise PackError(out, f"need each of the {n_parts} parts exactly once; got parts {got}"
                             + (f", missing {missing}" if missing else ""))

    splits = split_order({s["split"] for _, m in loaded for s in m["shards"]})
    renamed: dict[tuple[int, str], str] = {}
    shards = []
    split_sizes = {}
    for split in splits:
        number = samples = nbytes = 0
        for k, (path, m) in enumerate(loaded):
            for s in (s for s in m["shards"] if s["split"] == split):
                new = schema.shard_name(split, number)
                _place(path / s["path"], out / new, mode)
                renamed[(k, s["path"])] = new
                shards.append(dict(s, path=new))
                number += 1
                samples += s["samples"]
                nbytes += s["bytes"]
        split_sizes[split] = {"samples": samples, "shards": number, "bytes": nbytes}

    tables = []
    for k, (path, _) in enumerate(loaded):
        t = read_index(path)
        new_names = [renamed.get((k, s)) for s in t.column("shard").to_pylist()]
        if None in new_names:
            stray = t.column("shard").to_pylist()[new_names.index(None)]
            raise PackError(path / schema.INDEX_FILE, f"rows point to shard {stray!r}, which the part's manifest "
                                                      "does not list")
        tables.append(t.set_column(t.schema.get_field_index("shard"), "shard", pa.array(new_names, pa.string())))
    table = pa.concat_tables(tables)
    split_rank = pa.array([splits.index(s) for s in table.column("split").to_pylist()], pa.int32())
    order = pc.sort_indices(table.append_column("_split_rank", split_rank),
                            sort_keys=[("_split_rank", "ascending"), ("shard", "ascending"), ("sample_index", "ascending")])
    table = table.take(order)
    index_path = write_index(out, table)

    manifest = dict(ref)
    manifest["parameters"] = dict(ref["parameters"], part=None)
    manifest["shards"] = shards
    manifest["splits"] = split_sizes
    manifest["index"] = {"path": schema.INDEX_FILE, "rows": table.num_rows, "sha256": file_sha256(index_path)}
    manifest["skipped"] = sorted((s for _, m in loaded for s in m["skipped"]), key=lambda s: s["patch_id"])
    manifest["parts"] = [{"part": m["parameters"]["part"], "shards": len(m["shards"]),
                          "samples": m["index"]["rows"]} for _, m in loaded]
    write_text_atomic(out / schema.CARD_FILE, dataset_card(manifest, table))
    write_manifest(out, manifest)
    return manifest
