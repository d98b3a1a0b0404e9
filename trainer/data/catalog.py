"""The packed dataset as the loader sees it: manifest + index, read once, and selections from them.

The manifest is read first (it lists the shards with their size and sha256, and its presence
means the pack finished); the index gives every sample's shard, position and member byte ranges,
so a selection by split, domain, patch id or class content is made without opening a shard,
and any sample can be read with ranged reads. Column names: docs/packing.md. Split names and shard
paths of both are checked first (`packer.paths`): a crafted `../` path never reaches a reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from packer.paths import check_index, check_manifest
from packer.schema import INDEX_FILE, MANIFEST_FILE, MODALITY_NAMES, N_CLASSES
from trainer.data.sources import Source

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
        check_manifest(self.manifest, source.url(MANIFEST_FILE))
        self.shards = {
            s["path"]: ShardInfo(s["path"], int(s["bytes"]), s.get("sha256")) for s in self.manifest.get("shards", [])
        }
        table = pq.read_table(pa.BufferReader(arrow_owned(source.read_all(INDEX_FILE))))
        self.table: pa.Table = check_index(table, source.url(INDEX_FILE))
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
        self._check_packed(required)
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
        return Selection(
            patch_ids=sub.column("patch_id").to_pylist(),
            shard=np.array([number[p] for p in shard_paths], dtype=np.int64),
            sample_index=_ints(sub, "sample_index"),
            members=members,
            shards=[self.shards[p] for p in uniq],
            class_counts={k: v[rows] for k, v in counts.items()},
        )

    def _check_packed(self, required: Sequence[str]) -> None:
        """A modality the dataset was packed without is named as such (the manifest lists the packed
        ones), rather than surfacing as "no sample matches the selection"."""
        packed = self.manifest.get("modalities")
        absent = [m for m in required if packed is not None and m not in packed]
        if absent:
            raise SelectionError(
                f"{self.source.base}: the dataset has no {', '.join(absent)} "
                f"(packed: {', '.join(m for m in MODALITY_NAMES if m in packed) or 'nothing'}); "
                "leave it out (modalities.inputs, labels, or filter_sentinel2 for SENTINEL2_MSK-SC) or repack with it")

    def _counts(self, task: str) -> np.ndarray:
        col = self.table.column(COUNT_COLUMNS[task]).to_pylist()
        n = N_CLASSES[task]
        return np.array([c if c is not None else [0] * n for c in col], dtype=np.int64).reshape(len(col), n)

    @staticmethod
    def _need_counts(counts: dict[str, np.ndarray], task: str) -> np.ndarray:
        if task not in counts:
            raise SelectionError(f"the index has no per-class counts for {task}")
        return counts[task]


def arrow_owned(data: bytes) -> pa.Buffer:
    """A copy of `data` in memory Arrow allocated, to read Parquet from.

    Reading from a buffer that wraps Python bytes (`io.BytesIO`, `pa.BufferReader(bytes)`) made
    the process abort at interpreter exit once torch was imported ("terminate called without an
    active exception", about one run in four with pyarrow 26 / torch 2.14): Arrow's background
    threads outlive the Python object they point into. One copy of the index, once, avoids it.
    """
    buf = pa.allocate_buffer(len(data))
    memoryview(buf).cast("B")[:] = data
    return buf


def _ints(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).to_numpy(zero_copy_only=False)
    if np.any(values is None) or (values.dtype == object):
        raise SelectionError(f"index column {column} has missing values for selected rows")
    return values.astype(np.int64)


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
