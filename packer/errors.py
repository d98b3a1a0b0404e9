"""Errors the packer reports to a user: each names the file (or option) and the problem."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class PackError(Exception):
    """Bad input or inconsistent output; `path` is the file or option at fault."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # pickle with the constructor's arguments (workers return these to the writer)
        return type(self), (self.path, self.problem)


class PatchError(PackError):
    """A problem confined to one patch: `--on-error skip` may drop the patch and go on."""

    def __init__(self, patch_id: str, path: object, problem: str):
        self.patch_id = patch_id
        super().__init__(path, problem)

    def __reduce__(self):
        return type(self), (self.patch_id, self.path, self.problem)

    def as_record(self) -> dict[str, str]:
        return {"patch_id": self.patch_id, "file": self.path, "error": self.problem}


@contextmanager
def naming(path: object) -> Iterator[None]:
    """Give an OSError raised inside the path it concerns: `write`, `fsync` and friends do not say
    which file a full disk or a lost mount hit, and the user needs to know where to look."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
