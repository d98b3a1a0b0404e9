"""What the members of a shard are called, and which format version a pack follows.

A sample is the tar members `<patch_id>.json` (its metadata) and `<patch_id>.<MODALITY>.npy.zst`
(one per modality it has), adjacent in the shard, JSON first. The part after the first dot is the
member's *key*, the name webdataset groups it under. Everywhere else (index columns, selections,
checksums) the JSON member is called `META_SUFFIX` ("json") and an array member by its modality.
"""

from __future__ import annotations

from packer import schema

FORMAT_VERSION = 2
"""2: every `.npy.zst` member is a plain zstd frame of a `.npy` file, and the index has per-member
checksums. 1: wider dtypes could be byte-shuffled under the same suffix (still read;
`packer.shardformat.encoding`). The manifest's `format_version`."""
ARRAY_SUFFIX = ".npy.zst"
META_SUFFIX = "json"


def member_name(patch_id: str, modality_name: str) -> str:
    """Tar member holding one modality array of a sample: `<patch_id>.<MODALITY>.npy.zst`."""
    return f"{patch_id}.{modality_name}{ARRAY_SUFFIX}"


def meta_member_name(patch_id: str) -> str:
    """Tar member holding a sample's metadata: `<patch_id>.json`."""
    return f"{patch_id}.{META_SUFFIX}"


def any_member_name(patch_id: str, name: str) -> str:
    """The tar member of `name`: `META_SUFFIX` for the metadata, else a modality."""
    return meta_member_name(patch_id) if name == META_SUFFIX else member_name(patch_id, name)


def member_key(modality_name: str) -> str:
    """The WebDataset extension key of a modality member (what a decoded sample dict uses)."""
    return f"{modality_name}{ARRAY_SUFFIX}"


def name_of_key(key: str) -> str:
    """A member's key -> `META_SUFFIX` or its modality (the inverse of `member_key`)."""
    return META_SUFFIX if key == META_SUFFIX else key[: -len(ARRAY_SUFFIX)]


def split_member_name(name: str) -> tuple[str, str]:
    """`<patch_id>.<key>` -> (patch_id, key); ValueError for names outside the contract."""
    pid, dot, key = name.partition(".")
    if not dot or not pid or "/" in name or "\\" in name or not schema.PATCH_ID_RE.match(pid):
        raise ValueError(f"tar member {name!r} is not <patch_id>.<suffix> (not a flair-stream shard?)")
    return pid, key


WDS_LOWERCASES_KEYS = True
"""webdataset's default grouping (`WebDataset(urls)`, `tarfile_to_samples`) lower-cases member
extensions, so a decoded sample dict holds `aerial_rgbi.npy.zst`, not `AERIAL_RGBI.npy.zst`."""


def wds_member_key(modality_name: str) -> str:
    """The key of a modality member in a sample dict yielded by plain `webdataset.WebDataset`."""
    return member_key(modality_name).lower() if WDS_LOWERCASES_KEYS else member_key(modality_name)
