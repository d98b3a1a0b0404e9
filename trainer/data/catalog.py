"""The packed dataset as the loader sees it: manifest + index, read once, and selections from them.

The manifest is read first (it lists the shards with their size and sha256, and its presence
means the pack finished); the index gives every sample's shard, position and member byte ranges,
so a selection by split, domain, patch id or class content is made without opening a shard,
and any sample can be read with ranged reads. Column names: docs/packing.md.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from packer.index import checksum_column
from packer.schema import FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, N_CLASSES, TIME_SERIES_MODALITIES
from trainer.data.sources import Source

log = logging.getLogger(__name__)

COUNT_COLUMNS = {"AERIAL_LABEL-COSIA": "cosia_counts", "ALL_LABEL-LPIS": "lpis_l1_counts"}
"""Per-class pixel counts in the index (LPIS: level 1 only)."""


class SelectionError(ValueError):
    """A selection matched nothing or names something the index does not have."""


@dataclass(frozen=True)
class ShardInfo:
    path: str
    bytes: int
    sha256: str | None


@dataclass
class Selection:
    """Selected samples, in index order, with what is needed to read them."""

    patch_ids: list[str]
    shard: np.ndarray  # (N,) shard number into `shards`
    sample_index: np.ndarray  # (N,) position inside the shard
    members: dict[str, tuple[np.ndarray, np.ndarray]]  # member -> (offsets, sizes); "json" included
    shards: list[ShardInfo]
    class_counts: dict[str, np.ndarray]  # task -> (N, n_classes) pixel counts, where the index has them
    checksums: dict[str, np.ndarray] = field(default_factory=dict)  # member -> (N,) uint64 xxh3_64 (format 2)
    max_dates: dict[str, int] = field(default_factory=dict)  # series -> most dates of a selected sample
    format_version: int = FORMAT_VERSION  # the pack's shard format (packer.codec reads 1 and 2)
    modality_table: dict[str, dict] = field(default_factory=dict)  # the manifest's modality facts (dtype, sizes)

    def __len__(self) -> int:
        return len(self.patch_ids)


class Catalog:
    """Manifest + index of one packed dataset behind a `Source`."""

    def __init__(self, source: Source) -> None:
        self.source = source
        try:
            self.manifest: dict[str, Any] = json.loads(source.read_all(MANIFEST_FILE))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{source.url(MANIFEST_FILE)}: no manifest (not a packed dataset, or the pack did not finish)"
            ) from None
        self.shards = {
            s["path"]: ShardInfo(s["path"], int(s["bytes"]), s.get("sha256")) for s in self.manifest.get("shards", [])
        }
        self.format_version = int(self.manifest.get("format_version", 1))
        if not 1 <= self.format_version <= FORMAT_VERSION:
            raise SelectionError(f"{source.url(MANIFEST_FILE)}: shard format {self.format_version} is newer than this "
                                 f"reader (1 to {FORMAT_VERSION}); update flair-stream")
        self.table: pa.Table = pq.read_table(io.BytesIO(source.read_all(INDEX_FILE)))
        if checksum_column("json") not in self.table.column_names:
            log.warning("%s: the index has no member checksums (shard format %d): members are read without "
                        "verification; re-pack with this version to check every member on read",
                        source.url(INDEX_FILE), self.format_version)
        missing = [s for s in set(self.table.column("shard").to_pylist()) if s not in self.shards]
        if missing:
            raise SelectionError(f"{source.url(INDEX_FILE)}: rows point to shards absent from the manifest: {missing[:3]}")

    def select(
        self,
        split: str | None,
        required: Sequence[str],
        domains: Iterable[str] = (),
        patch_ids: Iterable[str] | str | None = None,
        contains_class: Mapping[str, int] | None = None,
        min_class_share: Mapping[str, Mapping[int, float]] | None = None,
    ) -> Selection:
        """Rows of `split` that have every `required` member and pass the filters.

        `domains` match a domain (`D006`) or a domain-year (`D006-2020`); `patch_ids` is a list
        or a text file with one id per line; `contains_class` keeps patches where a task's class
        has at least one pixel; `min_class_share` keeps those where it covers at least a fraction.
        """
        t = self.table
        mask = np.ones(t.num_rows, dtype=bool)
        if split is not None:
            splits = np.asarray(t.column("split").to_pylist(), dtype=object)
            if split not in set(splits):
                raise SelectionError(f"split {split!r} not in the index (has {sorted(set(splits))})")
            mask &= splits == split
        present = t.column("modalities").to_pylist()
        for name in required:
            mask &= np.array([name in p for p in present], dtype=bool)
        domains = list(domains or ())
        if domains:
            dom = np.asarray(t.column("domain").to_pylist(), dtype=object)
            dom_year = np.asarray([f"{d}-{y:04d}" for d, y in zip(dom, t.column("year").to_pylist())], dtype=object)
            mask &= np.isin(dom, domains) | np.isin(dom_year, domains)
        if patch_ids is not None:
            if isinstance(patch_ids, str):
                patch_ids = [ln.strip() for ln in Path(patch_ids).read_text().splitlines() if ln.strip()]
            wanted = set(patch_ids)
            ids = t.column("patch_id").to_pylist()
            unknown = wanted - set(ids)
            if unknown:
                raise SelectionError(f"patch ids not in the index: {sorted(unknown)[:5]}")
            mask &= np.array([p in wanted for p in ids], dtype=bool)
        counts = {task: self._counts(task) for task in COUNT_COLUMNS if COUNT_COLUMNS[task] in t.column_names}
        for task, c in (contains_class or {}).items():
            cnt = self._need_counts(counts, task)
            if not 0 <= c < cnt.shape[1]:
                raise SelectionError(f"data.select.contains_class.{task}: class {c} outside 0..{cnt.shape[1] - 1}")
            mask &= cnt[:, c] > 0
        for task, shares in (min_class_share or {}).items():
            cnt = self._need_counts(counts, task)
            total = np.maximum(cnt.sum(axis=1), 1)
            for c, share in shares.items():
                if not 0 <= int(c) < cnt.shape[1]:
                    raise SelectionError(f"data.select.min_class_share.{task}: class {c} outside 0..{cnt.shape[1] - 1}")
                mask &= cnt[:, int(c)] / total >= share
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            raise SelectionError(f"no sample of split {split!r} matches the selection (required members {list(required)})")
        sub = t.take(pa.array(rows))
        shard_paths = sub.column("shard").to_pylist()
        uniq = sorted(set(shard_paths))
        number = {p: i for i, p in enumerate(uniq)}
        members = {"json": (_ints(sub, "json_offset"), _ints(sub, "json_size"))}
        for name in required:
            members[name] = (_ints(sub, f"{name}_offset"), _ints(sub, f"{name}_size"))
        checksums = {}
        if checksum_column("json") in sub.column_names:
            checksums = {name: _uints(sub, checksum_column(name)) for name in members}
        max_dates = {name: int(_ints(sub, f"T_{name}").max(initial=0)) for name in required
                     if name in TIME_SERIES_MODALITIES}
        return Selection(
            patch_ids=sub.column("patch_id").to_pylist(),
            shard=np.array([number[p] for p in shard_paths], dtype=np.int64),
            sample_index=_ints(sub, "sample_index"),
            members=members,
            shards=[self.shards[p] for p in uniq],
            class_counts={k: v[rows] for k, v in counts.items()},
            checksums=checksums,
            max_dates=max_dates,
            format_version=self.format_version,
            modality_table=dict(self.manifest.get("modalities", {})),
        )

    def _counts(self, task: str) -> np.ndarray:
        col = self.table.column(COUNT_COLUMNS[task]).to_pylist()
        n = N_CLASSES[task]
        return np.array([c if c is not None else [0] * n for c in col], dtype=np.int64).reshape(len(col), n)

    @staticmethod
    def _need_counts(counts: dict[str, np.ndarray], task: str) -> np.ndarray:
        if task not in counts:
            raise SelectionError(f"the index has no per-class counts for {task}")
        return counts[task]


def _ints(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).to_numpy(zero_copy_only=False)
    if np.any(values is None) or (values.dtype == object):
        raise SelectionError(f"index column {column} has missing values for selected rows")
    return values.astype(np.int64)


def _uints(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).to_numpy(zero_copy_only=False)
    if values.dtype == object:
        raise SelectionError(f"index column {column} has missing values for selected rows")
    return values.astype(np.uint64)


def class_balanced_weights(counts: np.ndarray) -> np.ndarray:
    """Per-sample weights from per-class pixel counts `(N, C)`, favouring rare classes.

    A sample's weight is the mean inverse frequency of its pixels' classes, so a patch made of a
    class that is 100x rarer is drawn about 100x more often. Classes absent everywhere are ignored.
    """
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts.sum(axis=0)
    freq = freq / max(freq.sum(), 1.0)
    inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-300), 0.0)
    pixels = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    w = (counts / pixels) @ inv
    return w / w.sum() if w.sum() > 0 else np.full(len(counts), 1.0 / max(len(counts), 1))
