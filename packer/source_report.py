"""What reading a zipped source cost: zips read, requests made, bytes fetched (the run summary's lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

from packer.ranges import FetchStats
from packer.tree import SourceTree

MB = 1e6
LISTED = 20
"""Ignored members named in the summary (the count is always given)."""


@dataclass
class SourceReport:
    zips_read: int
    zip_bytes: int  # total size of the zips read
    zips_skipped: int  # named after a modality not packed: never opened
    ignored: list[str]  # members outside the tree grammar
    warnings: list[str]  # zips salvaged without their end
    remote: bool
    discovery: FetchStats  # listing, central directories, GeoPackages
    members: FetchStats = field(default_factory=FetchStats)  # the patches' members, this run

    @classmethod
    def of(cls, tree: SourceTree, discovery: FetchStats) -> "SourceReport":
        remote = any("://" in a.location for a in tree.archives)
        return cls(tree.zips_read, tree.zip_bytes, len(tree.zips_skipped), list(tree.ignored), list(tree.warnings),
                   remote, discovery)

    def add(self, requests: int, nbytes: int) -> None:
        self.members.requests += requests
        self.members.bytes += nbytes

    @property
    def requests(self) -> int:
        return self.discovery.requests + self.members.requests

    @property
    def bytes(self) -> int:
        return self.discovery.bytes + self.members.bytes

    def lines(self, patches: int) -> list[str]:
        verb = "fetched" if self.remote else "read"
        unread = f", {self.zips_skipped} zips of other modalities left unopened" if self.zips_skipped else ""
        lines = [f"source: {self.zips_read} zips ({self.zip_bytes / MB:.1f} MB){unread}; {verb} {self.bytes / MB:.1f} MB "
                 f"in {self.requests} {'requests' if self.remote else 'reads'} (directories and metadata: "
                 f"{self.discovery.bytes / MB:.1f} MB in {self.discovery.requests}; patch members: "
                 f"{self.members.requests / max(patches, 1):.1f} per patch)"]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} zip members outside the FLAIR-HUB tree grammar:")
            lines += [f"  {w}" for w in self.ignored[:LISTED]]
            if len(self.ignored) > LISTED:
                lines.append(f"  ... and {len(self.ignored) - LISTED} more")
        return lines

    def as_dict(self) -> dict:
        return {"zips_read": self.zips_read, "zip_bytes": self.zip_bytes, "zips_skipped": self.zips_skipped,
                "ignored": len(self.ignored), "requests": self.requests, "bytes": self.bytes,
                "member_requests": self.members.requests, "member_bytes": self.members.bytes}
