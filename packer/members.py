"""Shard bytes -> raw samples: the reading side of `packer.tarwriter` + `packer.codec`.

A raw sample is the plain dict every reader of this project hands out:
`{"patch_id": str, "meta": <the sample's JSON>, "arrays": {MODALITY: ndarray (bands, H, W)}}`.
Two ways in, both needing nothing beyond the standard library, numpy and zstandard:

- `members_of_blob(blob)`: the members of one sample fetched with one ranged read (the index's
  `offset`/`size` span is a small valid tar);
- `iter_tar_samples(fileobj)`: every sample of a whole shard read as a stream (no index, no seek),
  members grouped by patch id as webdataset does.

Tar entries are only ever read into memory, never extracted, and every member name is checked
against the shard contract (`<patch_id>.<suffix>`, no folder) before it is used.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import IO, Any, Iterable, Iterator

from packer import schema
from packer.codec import decode_array


def split_member_name(name: str) -> tuple[str, str]:
    """`<patch_id>.<suffix>` -> (patch_id, suffix); ValueError for names outside the contract."""
    pid, dot, suffix = name.partition(".")
    if not dot or not pid or "/" in name or "\\" in name or not schema.PATCH_ID_RE.match(pid):
        raise ValueError(f"tar member {name!r} is not <patch_id>.<suffix> (not a flair-stream shard?)")
    return pid, suffix


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
               format_version: int = schema.FORMAT_VERSION) -> dict[str, Any]:
    """Decode the members of one sample (keyed by full member name or by suffix) into a raw sample.

    `modalities=None` decodes every modality the sample has; otherwise only those (KeyError when
    one is absent from the sample). `format_version`: the pack's (its manifest's), see `packer.codec`.
    """
    by_suffix = {name[len(patch_id) + 1:] if name.startswith(patch_id + ".") else name: data
                 for name, data in members.items()}
    meta = json.loads(by_suffix[schema.META_SUFFIX])
    present = [m for m in schema.MODALITY_NAMES if schema.member_key(m) in by_suffix]
    wanted = present if modalities is None else list(modalities)
    missing = [m for m in wanted if m not in present]
    if missing:
        raise KeyError(f"{patch_id} has no {', '.join(missing)} (it has {', '.join(present)})")
    return {"patch_id": patch_id, "meta": meta,
            "arrays": {m: decode_array(by_suffix[schema.member_key(m)], format_version=format_version) for m in wanted}}
