"""`flair-pack verify OUT`: check every shard against the manifest and the index.

OUT is a local folder or an `s3://` URL (`packer.storage.write`). Each shard is read once, as a stream:
its sha256 and size are computed from the bytes as they pass, its tar headers (member names,
data offsets, sizes, sample order) are compared with the index rows, every member's xxh3_64 with
the index's checksum column (format 2), and every member is decoded with the loader's own decoder
(`packer.shardformat.encoding`) one sample at a time, so memory stays small, and checked against the manifest's
modality table (pixel size, dtype, bands per date x the index's T: `schema.layout_problems`, the
packer's own rule) and against the shape/dtype in the sample JSON.
Collects every problem into a readable report instead of stopping at the first.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from packer import schema
from packer.shardformat.encoding import decode_array, decode_json, member_suffixes
from packer.index import read_index
from packer.shardformat.columns import SAMPLE_SPAN, dates_column, member_columns
from packer.shardformat.names import (ARRAY_SUFFIX, META_SUFFIX, any_member_name, array_suffix_of_key,
                                      meta_member_name, name_of_key)
from packer.manifest import read_manifest, stream_sha256
from packer.shardformat.reader import damaged_members
from packer.paths import UnsafePathError
from packer.storage.write import OutputStore, open_store


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    members: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"checked {self.shards} shards, {self.samples} samples, {self.members} members: "
        if self.ok:
            return head + "OK"
        return head + f"{len(self.problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in self.problems)


class _HashingReader:
    """A forward-only reader that hashes and counts every byte read through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 22):
            pass


def _check_layout(arr, mod: str, member: str, row: dict, table: dict, where: str, report: VerifyReport) -> None:
    """A decoded member against the manifest's modality table (size, dtype, bands per date x the
    index's T): what the loader relies on, whatever the sample's own JSON says."""
    facts = table.get(mod)
    if facts is None:
        report.problems.append(f"{where}: member of {mod}, which the manifest's modality table does not list")
        return
    n_dates = row.get(dates_column(mod)) if facts["time_series"] else None
    for problem in schema.layout_problems(arr.shape, arr.dtype, name=mod, dtype_expected=facts["dtype"],
                                          bands_per_date=facts["bands_per_date"], size_px=facts["size_px"],
                                          time_series=facts["time_series"], n_dates=n_dates):
        report.problems.append(f"{where}: {member}: {problem} (manifest/index)")


def _check_checksums(data: dict[str, bytes], row: dict, where: str, report: VerifyReport) -> None:
    """Each member's xxh3_64 against the index (format-2 indexes; format 1 has no such columns)."""
    for name, got, want in damaged_members(row["patch_id"], data, row):
        report.problems.append(f"{where}: {name}: xxh3_64 {got:016x} differs from the index's {want:016x} "
                               "(damaged member)")


def _check_sample(data: dict[str, bytes], pid: str, where: str, report: VerifyReport, format_version: int,
                  row: dict | None = None, table: dict | None = None) -> None:
    meta_name = meta_member_name(pid)
    if meta_name not in data:
        report.problems.append(f"{where}: sample {pid} has no {meta_name}")
        return
    try:
        meta = decode_json(data[meta_name])
    except ValueError as exc:
        report.problems.append(f"{where}: {meta_name} {exc}")
        return
    for name, blob in data.items():
        if name == meta_name:
            continue
        key = name[len(pid) + 1:]
        mod = name_of_key(key)
        try:
            arr = decode_array(blob, format_version=format_version, suffix=array_suffix_of_key(key) or key)
        except Exception as exc:  # any decoding failure is a finding, not a crash of verify
            report.problems.append(f"{where}: {name} does not decode ({type(exc).__name__}: {exc})")
            continue
        if row is not None and table is not None:
            _check_layout(arr, mod, name, row, table, where, report)
        expect = meta.get("modalities", {}).get(mod)
        if expect is None:
            report.problems.append(f"{where}: {name} has no entry in the sample JSON")
        elif list(arr.shape) != expect["shape"] or str(arr.dtype) != expect["dtype"]:
            report.problems.append(f"{where}: {name} is {arr.dtype}{list(arr.shape)}, JSON says "
                                   f"{expect['dtype']}{expect['shape']}")


def verify_dataset(out: str | Path | OutputStore, decode: bool = True) -> VerifyReport:
    report = VerifyReport()
    try:
        store = open_store(out, create=False)
        manifest = read_manifest(store)
        index = read_index(store)
    except UnsafePathError:
        raise  # a crafted manifest or index is refused, not merely reported
    except Exception as exc:
        report.problems.append(f"{out}: cannot read manifest/index ({exc})")
        return report
    idx_info = manifest.get("index", {})
    if idx_info.get("sha256"):
        with store.open(schema.INDEX_FILE) as f:
            if stream_sha256(f) != idx_info["sha256"]:
                report.problems.append(f"{store}/{schema.INDEX_FILE}: sha256 differs from the manifest")
    if idx_info.get("rows") is not None and idx_info["rows"] != index.num_rows:
        report.problems.append(f"{store}/{schema.INDEX_FILE}: {index.num_rows} rows, manifest says {idx_info['rows']}")

    rows_by_shard: dict[str, list[dict]] = defaultdict(list)
    for row in index.to_pylist():
        rows_by_shard[row["shard"]].append(row)
    listed = {s["path"] for s in manifest["shards"]}
    for shard in sorted(set(rows_by_shard) - listed):
        report.problems.append(f"index rows point to {shard}, which the manifest does not list")

    for entry in manifest["shards"]:
        report.shards += 1
        rows = sorted(rows_by_shard.get(entry["path"], []), key=lambda r: r["sample_index"])
        _verify_shard(store, entry, rows, decode, report, manifest.get("modalities") or {}, manifest["format_version"],
                      member_suffixes(manifest.get("codec")))
    return report


def _expected_members(row: dict, suffixes: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size) that the index row promises (named with the suffix the
    manifest's codec gives each modality: a member stored otherwise is a finding)."""
    pid = row["patch_id"]
    expected = {}
    for name in (META_SUFFIX, *row["modalities"]):
        c_off, c_size = member_columns(name)
        expected[any_member_name(pid, name, suffixes.get(name, ARRAY_SUFFIX))] = (row[c_off], row[c_size])
    return expected


def _verify_shard(store: OutputStore, entry: dict, rows: list[dict], decode: bool, report: VerifyReport,
                  table: dict, format_version: int, suffixes: dict[str, str]) -> None:
    """One streaming pass over the shard: hash, size, headers against the index, decode per sample."""
    where_shard = f"{store}/{entry['path']}"
    size = store.size(entry["path"])
    if size is None:
        report.problems.append(f"{where_shard}: missing")
        return
    if size != entry["bytes"]:
        report.problems.append(f"{where_shard}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced?)")
    if len(rows) != entry["samples"]:
        report.problems.append(f"{where_shard}: index has {len(rows)} samples, manifest says {entry['samples']}")
    row_of = {r["patch_id"]: r for r in rows}
    expected = {r["patch_id"]: _expected_members(r, suffixes) for r in rows}
    seen: dict[str, dict[str, tuple[int, int]]] = {}  # patch id -> member -> (offset, size) in the tar
    current: str | None = None
    data: dict[str, bytes] = {}

    def finish_sample(pid: str | None) -> None:
        if pid is None or pid not in row_of:
            return
        report.samples += 1
        row = row_of[pid]
        where = f"{entry['path']}#{row['sample_index']}"
        for name, want in expected[pid].items():
            report.members += 1
            got = seen[pid].get(name)
            if got != want:
                report.problems.append(f"{where}: {name} is at {got} in the tar, index says {want}")
        span_offset, span_size = SAMPLE_SPAN
        if row[span_offset] + row[span_size] > size:
            report.problems.append(f"{where}: sample span runs past the end of the shard")
        extra = [n for n in seen[pid] if n not in expected[pid]]
        if extra:
            report.problems.append(f"{where}: members not in the index: {extra}")
        _check_checksums(data, row, where, report)
        if decode and set(data) == set(expected[pid]):
            _check_sample(data, pid, where, report, format_version, row, table)

    with store.open(entry["path"]) as f:
        reader = _HashingReader(f)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                for member in tf:
                    pid = member.name.split(".", 1)[0]
                    if pid != current:
                        finish_sample(current)
                        current, data = pid, {}
                        seen.setdefault(pid, {})
                    seen[pid][member.name] = (member.offset_data, member.size)
                    if expected.get(pid, {}).get(member.name) == (member.offset_data, member.size):
                        data[member.name] = tf.extractfile(member).read()
            finish_sample(current)
        except (tarfile.TarError, OSError, EOFError) as exc:
            report.problems.append(f"{where_shard}: not a readable tar ({exc})")
        reader.drain()
    if reader.sha.hexdigest() != entry["sha256"]:
        report.problems.append(f"{where_shard}: sha256 differs from the manifest (corrupted)")
    if list(seen) != [r["patch_id"] for r in rows]:
        report.problems.append(f"{where_shard}: samples in the tar differ from the index's (order or set)")
        for pid in row_of.keys() - seen.keys():
            report.problems.append(f"{entry['path']}#{row_of[pid]['sample_index']}: sample {pid} is not in the tar")
