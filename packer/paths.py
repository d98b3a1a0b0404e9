"""Split names and shard paths read from a manifest, an index or a resume record, checked before use.

A manifest or an index is data, and data can be crafted or damaged: a split named `../../x` or a
shard path `/home/me/.ssh/id_rsa` would make `flair-pack merge` write or move files outside its
output, and `verify`, `inspect` or the loader read files outside the dataset. So every split name
and shard path read from those files passes through here first, and a bad one stops the command
with one line naming the file and the value. The rules:

- a split name is a plain file-name part: `[A-Za-z0-9][A-Za-z0-9_-]*` (no separator, no `..`);
- a shard path is relative, POSIX, without empty, `.` or `..` parts, backslashes, NUL or a drive.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from packer.errors import PackError

SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class UnsafePathError(PackError):
    """A split name or a path read from a dataset file that would reach outside the dataset."""


def check_split_name(name: Any, where: object) -> str:
    """`name` if it is usable as a folder and file-name part, else UnsafePathError naming `where`."""
    if not isinstance(name, str) or not SPLIT_NAME_RE.match(name):
        raise UnsafePathError(where, f"split name {name!r} is not a plain name ([A-Za-z0-9][A-Za-z0-9_-]*): refused")
    return name


def check_relative_path(path: Any, where: object) -> str:
    """`path` if it stays inside the folder it is relative to, else UnsafePathError naming `where`."""
    bad = None
    if not isinstance(path, str) or not path:
        bad = "not a non-empty string"
    elif "\\" in path or "\0" in path:
        bad = "holds a backslash or a NUL byte"
    elif path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        bad = "is absolute"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        bad = "has an empty, '.' or '..' part"
    if bad:
        raise UnsafePathError(where, f"path {path!r} {bad}: only paths inside the dataset are allowed")
    return path


def check_manifest(manifest: Mapping[str, Any], where: object) -> Mapping[str, Any]:
    """Every split name and path a manifest holds (shards, splits, index); returns the manifest."""
    for entry in manifest.get("shards") or ():
        check_relative_path(entry.get("path"), where)
        if "split" in entry:
            check_split_name(entry["split"], where)
    for split in manifest.get("splits") or {}:
        check_split_name(split, where)
    index = manifest.get("index") or {}
    if "path" in index:
        check_relative_path(index["path"], where)
    return manifest


def check_index(table: Any, where: object) -> Any:
    """An index table (pyarrow): its `shard` and `split` columns; returns the table."""
    import pyarrow.compute as pc

    cols = table.column_names
    for path in pc.unique(table.column("shard")).to_pylist() if "shard" in cols else ():
        check_relative_path(path, where)
    for split in pc.unique(table.column("split")).to_pylist() if "split" in cols else ():
        check_split_name(split, where)
    return table
