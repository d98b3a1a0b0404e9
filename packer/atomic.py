"""Write-then-rename: the one way files that must never be seen half-written are written.

A reader, or a run resumed after a kill, finds the old file, no file, or the complete new one.
The temporary file sits beside the target (same folder, so the rename is atomic), is named
`.<name>.<pid>.partial` (leftovers are recognisable; two processes never share one), and is
removed when writing fails. Used by the packer, the generator, the trainer and inference alike.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(final: str | os.PathLike, *, keep_suffix: bool = False, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `final` when the block succeeds.

    `keep_suffix` ends the temporary name with `final`'s suffix, for writers that choose their
    format from the extension (GeoPackage). `durable` fsyncs the file and then its folder, so the
    new file survives a power loss once this returns (training checkpoints).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial" + (final.suffix if keep_suffix else ""))
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
        if durable:
            _fsync_folder(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(final, text.encode("utf-8"))


def _fsync_folder(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems refuse to open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
