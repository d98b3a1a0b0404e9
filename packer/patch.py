"""`PatchSource`: what a worker needs to pack one patch.

Its own light module (schema and the zip member record only) so that worker processes, which
unpickle these records, do not import discovery's GeoPackage and CSV readers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from packer import schema
from packer.zips import MEMBER, NO_ARCHIVE, Archive, Member


@dataclass(frozen=True)
class PatchSource:
    """Everything a worker needs to pack one patch; kept small (one per patch lives in memory).

    Files come from `root` (an extracted tree) unless `members` says a zip holds them: then
    `members` packs one `packer.zips.MEMBER` record per modality (in `modalities` order; archive
    number `NO_ARCHIVE` for a file of the folder) and `archives` are the zips they point into,
    a tuple shared by all patches that use the same zips.
    """

    patch_id: str
    split: str
    root: str
    modalities: tuple[str, ...]  # present and selected, in schema order
    dates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # time-series modality -> dates
    single_dates: dict[str, str] = field(default_factory=dict)  # mono-temporal modality -> date
    overrides: dict[str, str] | None = None  # relative paths that differ from the standard layout
    archives: tuple[Archive, ...] = ()  # the zips holding some of the files
    members: bytes | None = None

    @cached_property  # computed in the worker, where it is used many times per patch
    def files(self) -> dict[str, str]:
        """modality -> path in the tree (the standard layout unless a CSV said otherwise).

        It is also what the sample JSON records as `path`, wherever the bytes came from."""
        pid = schema.PatchId.parse(self.patch_id)
        extra = self.overrides or {}
        return {m: extra.get(m) or str(pid.relative_path(m)) for m in self.modalities}

    def member(self, name: str) -> tuple[Archive, Member] | None:
        """(zip, member) of modality `name` when a zip holds it, else None."""
        if self.members is None:
            return None
        i = self.modalities.index(name)
        record = memoryview(self.members)[i * MEMBER.size:(i + 1) * MEMBER.size]
        if MEMBER.unpack(record)[-1] == NO_ARCHIVE:
            return None
        archive_rel = self.files[name]
        probe, number = Member.from_record("", record)
        archive = self.archives[number]
        return archive, probe._replace(name=archive.member_name(archive_rel))

    def where(self, name: str) -> str:
        """The file of modality `name` as messages name it: a path, or `<zip>!/<member>`."""
        found = self.member(name)
        if found is not None:
            return found[0].where(self.files[name])
        return str(Path(self.root) / self.files[name])

    def source_size(self, name: str) -> int:
        """Bytes of the GeoTIFF itself (a zip member's uncompressed size, as once extracted)."""
        found = self.member(name)
        return found[1].size if found is not None else os.path.getsize(Path(self.root) / self.files[name])
