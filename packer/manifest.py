"""`<out>/manifest.json`: what was packed, how, and a checksum per shard (layout: docs/packing.md).

It holds no wall-clock time, so the same input and options give a byte-identical manifest; timings
go to the run summary instead. Written last: its presence means the dataset is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

from packer import schema
from packer.atomic import write_text_atomic
from packer.errors import PackError
from packer.paths import check_manifest
from packer.storage.write import OutputStore, open_store


def packer_version() -> str:
    try:
        return metadata.version("flair-stream")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def modality_table(names: list[str]) -> dict[str, dict]:
    """The schema facts a reader needs to interpret the members (copied from packer.schema)."""
    out = {}
    for n in names:
        m = schema.modality(n)
        out[n] = {
            "dtype": m.dtype, "bands_per_date": m.bands_per_date, "band_names": list(m.band_names),
            "size_px": m.size_px, "gsd_m": m.gsd_m, "time_series": m.time_series, "label": m.label,
        }
    return out


def stream_sha256(f: BinaryIO, chunk: int = 1 << 22) -> str:
    """sha256 of what is left to read in `f` (a local file or an S3 object alike)."""
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return stream_sha256(f)


def json_text(obj: object) -> str:
    """Deterministic, human-readable JSON (sorted keys), as the manifest and resume records are written."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def dump_json(path: Path, obj: object) -> None:
    """`json_text` written atomically."""
    write_text_atomic(path, json_text(obj))


def write_manifest(out: str | os.PathLike, manifest: dict) -> Path:
    path = Path(out) / schema.MANIFEST_FILE
    dump_json(path, manifest)
    return path


def read_manifest(out: str | os.PathLike | OutputStore) -> dict:
    """The manifest of a packed dataset (a local folder or an s3:// URL)."""
    store = open_store(out, create=False)
    if not store.exists(schema.MANIFEST_FILE):
        raise FileNotFoundError(f"{store}/{schema.MANIFEST_FILE}: no manifest (not a packed dataset, or the pack "
                                "did not finish)")
    where = f"{store}/{schema.MANIFEST_FILE}"
    try:
        manifest = json.loads(store.read_text(schema.MANIFEST_FILE))
    except ValueError as exc:
        raise PackError(where, f"not valid JSON ({exc})") from None
    return check_manifest(manifest, where)
