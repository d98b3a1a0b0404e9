"""Errors the packer reports to a user: each names the file (or option) and the problem."""

from __future__ import annotations


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
