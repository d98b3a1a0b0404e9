"""The run's append-only logs: `metrics.jsonl` (rank 0) and `samples/rank<r>.txt` (every rank).

Each can be cut back to the length it had when a checkpoint was written, so a resumed run logs
every step once (`train_checkpoint.resume` does that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from packer.atomic import write_text_atomic


class AppendLog:
    """A log file that only grows, one line per record; `end()` and `rewind()` let a resumed run
    cut it back to where it stood at its checkpoint (opened in append mode, it would otherwise
    hold the replayed steps twice)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, text: str) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)

    def end(self) -> int | None:
        """Bytes written so far (None when this rank keeps no such log)."""
        if self.path is None:
            return None
        return self.path.stat().st_size if self.path.is_file() else 0

    def rewind(self, end: int | None = None, keep: Callable[[str], bool] | None = None) -> None:
        """Cut the file at byte `end`, or (a checkpoint older than this rule) keep the lines `keep(line)`."""
        if self.path is None or not self.path.is_file():
            return
        if end is not None:
            if self.path.stat().st_size > end:
                with open(self.path, "r+b") as fh:
                    fh.truncate(end)
        elif keep is not None:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            write_text_atomic(self.path, "".join(line for line in lines if keep(line)))


class SampleLog(AppendLog):
    """`samples/rank<r>.txt`: `epoch batch patch_id valid` per trained sample (`train.log_samples`)."""

    def write(self, epoch: int, batch_index: int, patch_ids: list[str], valid: torch.Tensor) -> None:
        if self.path is not None:
            rows = zip(patch_ids, valid.tolist())
            self.append("".join(f"{epoch} {batch_index} {pid} {int(ok)}\n" for pid, ok in rows))


class StepLog(AppendLog):
    """`metrics.jsonl`: one JSON line per optimizer step and per evaluation (rank 0 only)."""

    def write(self, row: Mapping[str, Any]) -> None:
        self.append(json.dumps(row) + "\n")
