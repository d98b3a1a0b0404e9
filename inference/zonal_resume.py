"""Resume bookkeeping for `flair-zonal`: one file per finished (tile, task) in a work folder.

`<output_path>/<output_name>.tiles/` holds `run.json`, the fingerprint of the run (inputs,
geometry, preprocessing, output settings, a digest of the weights), and `<tile>.<task>.npy.zst`,
each tile's core on the output grid. Files are written to a temporary name and renamed, so a
file present is complete: an interrupted run resumes by skipping the tiles whose files exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zstandard

from packer.atomic import write_bytes_atomic


class ResumeMismatch(RuntimeError):
    """The work folder belongs to a run with other settings, or another run is using it."""


class WorkDir:
    """`<output>/<name>.tiles/`: `run.json` (what the tiles belong to) and `<tile>.<task>.npy.zst`."""

    def __init__(self, root: Path, fingerprint: dict[str, Any], tasks: Sequence[str], resume: bool) -> None:
        self.root, self.tasks = root, list(tasks)
        root.parent.mkdir(parents=True, exist_ok=True)
        # One run per output at a time: an advisory lock beside the folder (released by the OS
        # if the process dies, so a crashed run never blocks the next one; removed at the end).
        self._lock_path = root.parent / f".{root.name}.lock"
        self._lock = _acquire(self._lock_path, root)
        manifest = root / "run.json"
        text = json.dumps(fingerprint, sort_keys=True, indent=1)
        if root.exists() and not resume:
            shutil.rmtree(root)
        if manifest.is_file():
            old = json.loads(manifest.read_text(encoding="utf-8"))
            if old != fingerprint:
                changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                self.close()
                raise ResumeMismatch(
                    f"{root} holds tiles of a run with different settings ({', '.join(changed)}); "
                    "delete it or set resume: False to start over"
                )
        root.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            write_bytes_atomic(manifest, text.encode())
        self._cctx = zstandard.ZstdCompressor(level=3)
        self._dctx = zstandard.ZstdDecompressor()

    def close(self) -> None:
        """Remove and release the lock (the folder stays, for a later resume or removal).

        The lock file is unlinked while still locked: a run that opened it meanwhile finds,
        once it holds the lock, that the path no longer names its file, and starts over.
        """
        if not self._lock.closed:
            try:
                if _same_file(self._lock, self._lock_path):
                    self._lock_path.unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def path(self, tile_id: str, task: str) -> Path:
        return self.root / f"{tile_id}.{task}.npy.zst"

    def done(self, tile_id: str) -> bool:
        return all(self.path(tile_id, t).is_file() for t in self.tasks)

    def save(self, tile_id: str, task: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        write_bytes_atomic(self.path(tile_id, task), self._cctx.compress(buf.getvalue()))

    def load(self, tile_id: str, task: str) -> np.ndarray:
        raw = self._dctx.decompress(self.path(tile_id, task).read_bytes())
        return np.load(io.BytesIO(raw), allow_pickle=False)




def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _acquire(path: Path, root: Path, attempts: int = 10) -> Any:
    """Open and lock `path` exclusively, without waiting; retry if it was removed under us."""
    for _ in range(attempts):
        handle = open(path, "a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ResumeMismatch(f"another flair-zonal run is writing {root} (same output_path and output_name)") from None
        if _same_file(handle, path):
            return handle
        handle.close()  # the previous holder removed it after we opened it: lock the new file
    raise ResumeMismatch(f"{path}: could not take the lock (it keeps being replaced)")


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A cheap identity for the weights: size + hash of the first and last MiB."""
    p = Path(path)
    if not p.is_file():
        return "absent"
    h = hashlib.sha256(str(p.stat().st_size).encode())
    with open(p, "rb") as fh:
        h.update(fh.read(chunk))
        if p.stat().st_size > chunk:
            fh.seek(-chunk, os.SEEK_END)
            h.update(fh.read(chunk))
    return h.hexdigest()[:16]
