"""What the members of a shard are called, and which format version a pack follows.

A sample is the tar members `<patch_id>.json` (its metadata) and `<patch_id>.<MODALITY>.npy.zst`
(one per modality it has), adjacent in the shard, JSON first. A pack made with `flair-pack
--shuffle` (opt-in) stores the modalities of wider dtypes as `<patch_id>.<MODALITY>.npy.blosc`
instead: the suffix always says how the `.npy` file inside is stored. The part after the first
dot is the member's *key*, the name webdataset groups it under. Everywhere else (index columns,
selections, checksums) the JSON member is called `META_SUFFIX` ("json") and an array member by
its modality.
"""

from __future__ import annotations

from typing import Iterable

from packer import schema

FORMAT_VERSION = 2
"""The format of a default pack (the manifest's and every sample JSON's `format_version`).
2: every array member is `.npy.zst`, a plain zstd frame of a `.npy` file, and the index has
per-member checksums. 1: wider dtypes could be byte-shuffled under that same suffix (still read;
`packer.shardformat.encoding`)."""
SHUFFLE_FORMAT_VERSION = 3
"""The format of a `--shuffle` pack: format 2 plus `.npy.blosc` members. Its own number, so that a
reader that predates the suffix refuses the pack by its manifest instead of failing member by member."""
READABLE_FORMAT_VERSIONS = (1, FORMAT_VERSION, SHUFFLE_FORMAT_VERSION)
ARRAY_SUFFIX = ".npy.zst"
"""One zstd frame of a `.npy` file: the default, read by every webdataset client."""
SHUFFLED_ARRAY_SUFFIX = ".npy.blosc"
"""One Blosc chunk (byte-shuffle, then LZ4HC or zstd) of a `.npy` file: opt-in (`--shuffle`)."""
ARRAY_SUFFIXES = (ARRAY_SUFFIX, SHUFFLED_ARRAY_SUFFIX)
META_SUFFIX = "json"


def format_version_of(suffixes: Iterable[str]) -> int:
    """The format of a pack whose array members use `suffixes`."""
    return SHUFFLE_FORMAT_VERSION if SHUFFLED_ARRAY_SUFFIX in set(suffixes) else FORMAT_VERSION


def member_name(patch_id: str, modality_name: str, suffix: str = ARRAY_SUFFIX) -> str:
    """Tar member holding one modality array of a sample: `<patch_id>.<MODALITY>.npy.zst` (or `suffix`)."""
    return f"{patch_id}.{modality_name}{suffix}"


def meta_member_name(patch_id: str) -> str:
    """Tar member holding a sample's metadata: `<patch_id>.json`."""
    return f"{patch_id}.{META_SUFFIX}"


def any_member_name(patch_id: str, name: str, suffix: str = ARRAY_SUFFIX) -> str:
    """The tar member of `name`: `META_SUFFIX` for the metadata, else a modality (stored as `suffix`)."""
    return meta_member_name(patch_id) if name == META_SUFFIX else member_name(patch_id, name, suffix)


def member_key(modality_name: str, suffix: str = ARRAY_SUFFIX) -> str:
    """The WebDataset extension key of a modality member (what a decoded sample dict uses)."""
    return f"{modality_name}{suffix}"


def array_suffix_of_key(key: str) -> str | None:
    """The array suffix a member key ends with, or None (the JSON member, or not ours)."""
    return next((s for s in ARRAY_SUFFIXES if key.endswith(s)), None)


def name_of_key(key: str) -> str:
    """A member's key -> `META_SUFFIX` or its modality (the inverse of `member_key`)."""
    if key == META_SUFFIX:
        return META_SUFFIX
    suffix = array_suffix_of_key(key)
    return key[: -len(suffix)] if suffix else key


def split_member_name(name: str) -> tuple[str, str]:
    """`<patch_id>.<key>` -> (patch_id, key); ValueError for names outside the contract."""
    pid, dot, key = name.partition(".")
    if not dot or not pid or "/" in name or "\\" in name or not schema.PATCH_ID_RE.match(pid):
        raise ValueError(f"tar member {name!r} is not <patch_id>.<suffix> (not a flair-stream shard?)")
    return pid, key


WDS_LOWERCASES_KEYS = True
"""webdataset's default grouping (`WebDataset(urls)`, `tarfile_to_samples`) lower-cases member
extensions, so a decoded sample dict holds `aerial_rgbi.npy.zst`, not `AERIAL_RGBI.npy.zst`."""


def wds_member_key(modality_name: str, suffix: str = ARRAY_SUFFIX) -> str:
    """The key of a modality member in a sample dict yielded by plain `webdataset.WebDataset`."""
    key = member_key(modality_name, suffix)
    return key.lower() if WDS_LOWERCASES_KEYS else key
