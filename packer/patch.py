"""`PatchSource`: what a worker needs to pack one patch.

Its own light module (schema only) so that worker processes, which unpickle these records, do not
import discovery's GeoPackage and CSV readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from packer import schema


@dataclass(frozen=True)
class PatchSource:
    """Everything a worker needs to pack one patch; kept small (one per patch lives in memory)."""

    patch_id: str
    split: str
    root: str
    modalities: tuple[str, ...]  # present and selected, in schema order
    dates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # time-series modality -> dates
    single_dates: dict[str, str] = field(default_factory=dict)  # mono-temporal modality -> date
    overrides: dict[str, str] | None = None  # relative paths that differ from the standard layout

    @cached_property  # computed in the worker, where it is used many times per patch
    def files(self) -> dict[str, str]:
        """modality -> path relative to `root` (the standard layout unless a CSV said otherwise)."""
        pid = schema.PatchId.parse(self.patch_id)
        extra = self.overrides or {}
        return {m: extra.get(m) or str(pid.relative_path(m)) for m in self.modalities}
