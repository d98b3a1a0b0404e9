"""`flair-pack verify OUT`: check every shard against the manifest and the index.

Recomputes each shard's sha256 and size, walks its tar headers (member names, data offsets, sizes,
sample order), compares them with the index rows, and decodes every member (arrays against the
shape/dtype in the sample JSON), reading members by range so memory stays small. Collects every
problem into a readable report instead of stopping at the first.
"""

from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from packer import schema
from packer.codec import decode_array
from packer.index import member_columns, read_index
from packer.manifest import file_sha256, read_manifest


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


def _walk_tar(path: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every member, read from the headers."""
    with tarfile.open(path, "r:") as tf:
        return [(m.name, m.offset_data, m.size) for m in tf.getmembers()]


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _check_sample(data: dict[str, bytes], pid: str, where: str, report: VerifyReport) -> None:
    meta_name = schema.meta_member_name(pid)
    if meta_name not in data:
        report.problems.append(f"{where}: sample {pid} has no {meta_name}")
        return
    try:
        meta = json.loads(data[meta_name])
    except ValueError as exc:
        report.problems.append(f"{where}: {meta_name} is not JSON ({exc})")
        return
    for name, blob in data.items():
        if name == meta_name:
            continue
        mod = name[len(pid) + 1: -len(schema.ARRAY_SUFFIX)]
        try:
            arr = decode_array(blob)
        except Exception as exc:  # any decoding failure is a finding, not a crash of verify
            report.problems.append(f"{where}: {name} does not decode ({type(exc).__name__}: {exc})")
            continue
        expect = meta.get("modalities", {}).get(mod)
        if expect is None:
            report.problems.append(f"{where}: {name} has no entry in the sample JSON")
        elif list(arr.shape) != expect["shape"] or str(arr.dtype) != expect["dtype"]:
            report.problems.append(f"{where}: {name} is {arr.dtype}{list(arr.shape)}, JSON says "
                                   f"{expect['dtype']}{expect['shape']}")


def verify_dataset(out: str | Path, decode: bool = True) -> VerifyReport:
    out = Path(out)
    report = VerifyReport()
    try:
        manifest = read_manifest(out)
        index = read_index(out)
    except Exception as exc:
        report.problems.append(f"{out}: cannot read manifest/index ({exc})")
        return report
    idx_info = manifest.get("index", {})
    if idx_info.get("sha256") and file_sha256(out / schema.INDEX_FILE) != idx_info["sha256"]:
        report.problems.append(f"{out / schema.INDEX_FILE}: sha256 differs from the manifest")
    if idx_info.get("rows") is not None and idx_info["rows"] != index.num_rows:
        report.problems.append(f"{out / schema.INDEX_FILE}: {index.num_rows} rows, manifest says {idx_info['rows']}")

    rows_by_shard: dict[str, list[dict]] = defaultdict(list)
    for row in index.to_pylist():
        rows_by_shard[row["shard"]].append(row)
    listed = {s["path"] for s in manifest["shards"]}
    for shard in sorted(set(rows_by_shard) - listed):
        report.problems.append(f"index rows point to {shard}, which the manifest does not list")

    for entry in manifest["shards"]:
        report.shards += 1
        path = out / entry["path"]
        rows = sorted(rows_by_shard.get(entry["path"], []), key=lambda r: r["sample_index"])
        if not path.is_file():
            report.problems.append(f"{path}: missing")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            report.problems.append(f"{path}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced?)")
        if file_sha256(path) != entry["sha256"]:
            report.problems.append(f"{path}: sha256 differs from the manifest (corrupted)")
        if len(rows) != entry["samples"]:
            report.problems.append(f"{path}: index has {len(rows)} samples, manifest says {entry['samples']}")
        try:
            members = _walk_tar(path)
        except (tarfile.TarError, OSError, EOFError) as exc:
            report.problems.append(f"{path}: not a readable tar ({exc})")
            continue
        by_name = {name: (off, n) for name, off, n in members}
        keys = list(dict.fromkeys(name.split(".", 1)[0] for name, _, _ in members))
        if keys != [r["patch_id"] for r in rows]:
            report.problems.append(f"{path}: samples in the tar differ from the index's (order or set)")
        for row in rows:
            report.samples += 1
            pid = row["patch_id"]
            where = f"{entry['path']}#{row['sample_index']}"
            expected = {schema.meta_member_name(pid): (row["json_offset"], row["json_size"])}
            for mod in row["modalities"]:
                c_off, c_size = member_columns(mod)
                expected[schema.member_name(pid, mod)] = (row[c_off], row[c_size])
            data = {}
            for name, (off, n) in expected.items():
                report.members += 1
                if by_name.get(name) != (off, n):
                    report.problems.append(f"{where}: {name} is at {by_name.get(name)} in the tar, index says {(off, n)}")
                    continue
                if off + n > size:
                    report.problems.append(f"{where}: {name} runs past the end of the shard")
                    continue
                if decode:
                    data[name] = _read_range(path, off, n)
            if row["offset"] + row["size"] > size:
                report.problems.append(f"{where}: sample span runs past the end of the shard")
            extra = [n for n in by_name if n.split(".", 1)[0] == pid and n not in expected]
            if extra:
                report.problems.append(f"{where}: members not in the index: {extra}")
            if decode and len(data) == len(expected):
                _check_sample(data, pid, where, report)
    return report
