"""Shard bytes -> raw samples: the reading side of `writer` + `encoding`, and the check of a
decoded array against what the pack declares.

A raw sample is the plain dict every reader of this project hands out:
`{"patch_id": str, "meta": <the sample's JSON>, "arrays": {MODALITY: ndarray (bands, H, W)}}`.
Two ways in, both needing nothing beyond the standard library, numpy and zstandard (and
numcodecs for the opt-in `.npy.blosc` members):

- `members_of_blob(blob)`: the members of one sample fetched with one ranged read (the index's
  `offset`/`size` span is a small valid tar);
- `iter_tar_samples(fileobj)`: every sample of a whole shard read as a stream (no index, no seek),
  members grouped by patch id as webdataset does.

Tar entries are only ever read into memory, never extracted, and every member name is checked
against the shard contract (`<patch_id>.<suffix>`, no folder) before it is used.

`check_array` is what every ranged reader applies to a decoded member (the loader's
`trainer.data.reader.SampleReader`): the dtype, pixel size and band count the pack's manifest
declares for its modality, so nothing is silently cast downstream.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import IO, Any, Iterable, Iterator, Mapping

import numpy as np

from packer import schema
from packer.shardformat import names
from packer.shardformat.encoding import decode_array, member_checksum
from packer.shardformat.names import split_member_name


def members_of_blob(blob: bytes) -> dict[str, bytes]:
    """Member name -> bytes of a small tar held in memory (one sample's ranged read)."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def iter_tar_samples(fileobj: IO[bytes], where: str = "shard") -> Iterator[tuple[str, dict[str, bytes]]]:
    """(patch_id, {member suffix: bytes}) for each sample of a shard read front to back.

    The tar is read in stream mode, so `fileobj` may be any readable byte stream (a local file,
    an HTTP body, an S3 object). Members of a sample are adjacent (shard contract).
    """
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tf:
        for info in tf:
            if not info.isfile():
                continue
            try:
                pid, suffix = split_member_name(info.name)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if pid != current:
                if current is not None:
                    yield current, members
                current, members = pid, {}
            members[suffix] = tf.extractfile(info).read()
    if current is not None:
        yield current, members


def raw_sample(patch_id: str, members: dict[str, bytes], modalities: Iterable[str] | None = None,
               format_version: int = names.FORMAT_VERSION) -> dict[str, Any]:
    """Decode the members of one sample (keyed by full member name or by suffix) into a raw sample.

    `modalities=None` decodes every modality the sample has; otherwise only those (KeyError when
    one is absent from the sample). `format_version`: the pack's (its manifest's), see `packer.shardformat.encoding`.
    """
    by_suffix = {name[len(patch_id) + 1:] if name.startswith(patch_id + ".") else name: data
                 for name, data in members.items()}
    meta = json.loads(by_suffix[names.META_SUFFIX])
    keys = array_keys(by_suffix)
    present = list(keys)
    wanted = present if modalities is None else list(modalities)
    missing = [m for m in wanted if m not in present]
    if missing:
        raise KeyError(f"{patch_id} has no {', '.join(missing)} (it has {', '.join(present)})")
    return {"patch_id": patch_id, "meta": meta,
            "arrays": {m: decode_array(by_suffix[keys[m]], format_version=format_version,
                                       suffix=names.array_suffix_of_key(keys[m])) for m in wanted}}


def array_keys(keys: Iterable[str]) -> dict[str, str]:
    """Modality -> its member key among a sample's member `keys` (`.npy.zst` or `.npy.blosc`), in
    schema order; keys of neither suffix or of an unknown modality are left out."""
    found = {names.name_of_key(k): k for k in keys if names.array_suffix_of_key(k)}
    return {m: found[m] for m in schema.MODALITY_NAMES if m in found}


def damaged_members(patch_id: str, members: Mapping[str, bytes], row: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """`(member, got, want)` for each member of one sample (keyed by full name or by suffix) whose
    stored bytes' xxh3_64 differs from the one an index `row` records (format 2 and later; a row
    without checksum columns finds nothing)."""
    from packer.shardformat.columns import checksum_column  # pyarrow: only where there is an index

    damaged = []
    for name, data in members.items():
        key = name[len(patch_id) + 1:] if name.startswith(patch_id + ".") else name
        want = row.get(checksum_column(names.name_of_key(key)))
        if want is not None and (got := member_checksum(data)) != int(want):
            damaged.append((name, got, int(want)))
    return damaged


def check_array(name: str, arr: np.ndarray, facts: Mapping[str, Any] | None) -> str | None:
    """Why `arr` does not fit modality `name` as the pack declares it (dtype, pixels, bands), or None.

    `facts` is the manifest's entry for the modality (its modality table); the schema's own values
    stand in for what it does not say.
    """
    mod = schema.MODALITIES.get(name)
    dtype = (facts or {}).get("dtype") or (mod.dtype if mod else None)
    size = (facts or {}).get("size_px") or (mod.size_px if mod else None)
    per_date = (facts or {}).get("bands_per_date") or (mod.bands_per_date if mod else None)
    series = (facts or {}).get("time_series", mod.time_series if mod else False)
    if dtype is not None and arr.dtype != np.dtype(dtype):
        return f"array is {arr.dtype}, the pack declares {np.dtype(dtype)} for {name} (refusing to cast)"
    if arr.ndim != 3 or (size is not None and arr.shape[1:] != (size, size)):
        return f"array has shape {list(arr.shape)}, expected (bands, {size}, {size}) for {name}"
    if per_date and (arr.shape[0] % per_date if series else arr.shape[0] != per_date):
        what = f"a multiple of {per_date}" if series else str(per_date)
        return f"array has {arr.shape[0]} bands, expected {what} for {name}"
    return None
