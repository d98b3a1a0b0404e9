"""One patch -> one WebDataset sample: its GeoTIFFs read and checked, its metadata, its members'
bytes (`packer.shardformat.writer.sample_members`) and its index-row fields.

Runs in the worker processes; the shard writer only adds tar headers and offsets.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import rasterio

from packer import schema
from packer.errors import PatchError
from packer.geotiffs import class_counts, read_patch
from packer.lifetime import die_with_parent
from packer.patch import PatchSource
from packer.ranges import fetch_stats
from packer.shardformat.columns import COUNT_COLUMNS, dates_column
from packer.shardformat.encoding import pack_format_version
from packer.shardformat.writer import sample_members


@dataclass
class EncodedSample:
    patch_id: str
    split: str
    members: list[tuple[str, bytes]]  # (tar member name, bytes), JSON first then schema order
    row: dict  # index fields known before the sample is placed in a shard
    source_bytes: int
    fetched: tuple[int, int] = (0, 0)  # (requests, bytes) this patch cost its source (zips, HTTP)


def build_sample(patch: PatchSource, settings: dict[str, dict[str, int]]) -> EncodedSample:
    """Read, check and encode one patch (`settings` per modality, `packer.shardformat.encoding`).
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
        "format_version": pack_format_version(settings),
        "patch_id": patch.patch_id,
        "domain": pid.domain, "year": pid.year, "roi": pid.roi, "row": pid.row, "col": pid.col,
        "split": patch.split,
        "crs": first["crs"],
        "bounds": first["bounds"],
        "modalities": modalities,
    }
    members, checksums = sample_members(patch.patch_id, meta, {name: d.array for name, d in datas.items()}, settings)

    row = {
        "patch_id": patch.patch_id, "split": patch.split, "domain": pid.domain, "year": pid.year,
        "roi": pid.roi, "row": pid.row, "col": pid.col,
        "modalities": list(datas),
        "crs": first["crs"],
        "xmin": first["bounds"][0], "ymin": first["bounds"][1], "xmax": first["bounds"][2], "ymax": first["bounds"][3],
        **checksums,
    }
    for name in schema.TIME_SERIES_MODALITIES:
        row[dates_column(name)] = len(patch.dates[name]) if name in datas else None
    for name, column in COUNT_COLUMNS.items():
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
