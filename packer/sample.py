"""One patch -> one WebDataset sample: the member bytes and the patch's index-row fields.

Runs in the worker processes; the writer only adds tar headers and offsets.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

import rasterio

from packer import schema
from packer.codec import encode_array, member_checksum
from packer.errors import PatchError
from packer.lifetime import die_with_parent
from packer.ranges import fetch_stats
from packer.geotiffs import class_counts, read_patch
from packer.index import checksum_column
from packer.patch import PatchSource

LABEL_COUNT_COLUMNS = {"AERIAL_LABEL-COSIA": "cosia_counts", "ALL_LABEL-LPIS": "lpis_l1_counts"}
"""Index columns with per-class pixel counts (LPIS: band 1 = level 1)."""


@dataclass
class EncodedSample:
    patch_id: str
    split: str
    members: list[tuple[str, bytes]]  # (tar member name, bytes), JSON first then schema order
    row: dict  # index fields known before the sample is placed in a shard
    source_bytes: int
    fetched: tuple[int, int] = (0, 0)  # (requests, bytes) this patch cost its source (zips, HTTP)


def json_bytes(obj: object) -> bytes:
    """Deterministic compact JSON (sorted keys) so identical input gives identical bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def build_sample(patch: PatchSource, settings: dict[str, dict[str, int]]) -> EncodedSample:
    """Read, check and encode one patch (zstd `settings` per modality, `packer.codec`).
    Raises PatchError naming the file at fault."""
    datas = read_patch(patch)
    pid = schema.PatchId.parse(patch.patch_id)
    first = next(iter(datas.values())).meta
    modalities = {}
    for name, d in datas.items():
        entry = dict(d.meta)
        if name in patch.dates:
            entry["dates"] = list(patch.dates[name])
        if name in patch.single_dates:
            entry["date"] = patch.single_dates[name]
        modalities[name] = entry
    meta = {
        "format_version": schema.FORMAT_VERSION,
        "patch_id": patch.patch_id,
        "domain": pid.domain, "year": pid.year, "roi": pid.roi, "row": pid.row, "col": pid.col,
        "split": patch.split,
        "crs": first["crs"],
        "bounds": first["bounds"],
        "modalities": modalities,
    }
    members = [(schema.meta_member_name(patch.patch_id), json_bytes(meta))]
    checksums = {checksum_column("json"): member_checksum(members[0][1])}
    for name, d in datas.items():
        data = encode_array(d.array, settings[name])
        members.append((schema.member_name(patch.patch_id, name), data))
        checksums[checksum_column(name)] = member_checksum(data)

    row = {
        "patch_id": patch.patch_id, "split": patch.split, "domain": pid.domain, "year": pid.year,
        "roi": pid.roi, "row": pid.row, "col": pid.col,
        "modalities": list(datas),
        "crs": first["crs"],
        "xmin": first["bounds"][0], "ymin": first["bounds"][1], "xmax": first["bounds"][2], "ymax": first["bounds"][3],
        **checksums,
    }
    for name in schema.TIME_SERIES_MODALITIES:
        row[f"T_{name}"] = len(patch.dates[name]) if name in datas else None
    for name, column in LABEL_COUNT_COLUMNS.items():
        row[column] = class_counts(patch, name, datas[name].array[0]) if name in datas else None
    source_bytes = sum(patch.source_size(m) for m in patch.files)
    row["source_bytes"] = source_bytes
    return EncodedSample(patch.patch_id, patch.split, members, row, source_bytes)


_WORKER_ENV: list[rasterio.Env] = []


def init_worker(parent_pid: int | None = None) -> None:
    """Worker start-up: end with the parent however it ends (`packer.lifetime`), leave Ctrl-C to
    the main process, which stops workers cleanly (no traceback per worker), and keep one GDAL
    environment open instead of setting one up around every file."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = rasterio.Env()
    env.__enter__()
    _WORKER_ENV.append(env)


def build_or_error(patch: PatchSource, settings: dict[str, dict[str, int]]) -> EncodedSample | PatchError:
    """Worker entry point: a PatchError is returned (not raised) so the writer applies --on-error."""
    before = fetch_stats()
    try:
        sample = build_sample(patch, settings)
    except PatchError as exc:
        return exc
    spent = fetch_stats() - before
    sample.fetched = (spent.requests, spent.bytes)
    return sample
