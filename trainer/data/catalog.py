"""The packed dataset as the loader sees it: manifest + index, read once, and selections from them.

The manifest is read first (it lists the shards with their size and sha256, and its presence
means the pack finished); the index gives every sample's shard, position and member byte ranges,
so a selection by split, domain, patch id or class content is made without opening a shard,
and any sample can be read with ranged reads. Column names: `packer.shardformat.columns`. Split names and shard
paths of both are checked first (`packer.paths`): a crafted `../` path never reaches a reader.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from packer.paths import check_manifest, check_relative_path, check_split_name
from packer.schema import INDEX_FILE, MANIFEST_FILE, MODALITY_NAMES, N_CLASSES, TIME_SERIES_MODALITIES
from packer.shardformat.columns import COUNT_COLUMNS, checksum_column, dates_column, member_columns
from packer.shardformat.encoding import member_suffixes
from packer.shardformat.names import FORMAT_VERSION, META_SUFFIX, READABLE_FORMAT_VERSIONS
from packer.storage.read import LocalSource, Source, SourceFile

log = logging.getLogger(__name__)

DICTIONARY_COLUMNS = ("split", "shard", "domain")
"""Index columns with few distinct values, read dictionary-encoded (integer codes, not 241 k strings)."""


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
    class_counts: Mapping[str, np.ndarray]  # task -> (N, n_classes) pixel counts, where the index has them
    rows: np.ndarray | None = None  # (N,) row of each selected sample in the index (for other columns)
    checksums: dict[str, np.ndarray] = field(default_factory=dict)  # member -> (N,) uint64 xxh3_64 (format 2)
    max_dates: dict[str, int] = field(default_factory=dict)  # series -> most dates of a selected sample
    format_version: int = FORMAT_VERSION  # the pack's shard format (packer.shardformat.encoding reads 1 to 3)
    suffixes: dict[str, str] = field(default_factory=dict)  # modality -> its array member suffix (.npy.zst default)
    modality_table: dict[str, dict] = field(default_factory=dict)  # the manifest's modality facts (dtype, sizes)

    def __len__(self) -> int:
        return len(self.patch_ids)


class Catalog:
    """Manifest + index of one packed dataset behind a `Source`.

    Built for one catalog per rank on hundreds of ranks (docs/scaling.md): opening reads the
    manifest and the index's Parquet footer, then only the columns a selection needs (split,
    the wanted members' offsets and sizes, patch ids; domains and class counts only when a filter
    or class-balanced sampling asks for them), and everything is done on Arrow/numpy arrays, never
    on Python lists of 241 k rows. Remote indexes are read with ranged requests, so a rank fetches
    those columns, not the whole file. `table` still gives the whole index to those who want it.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        try:
            self.manifest: dict[str, Any] = json.loads(source.read_all(MANIFEST_FILE))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{source.url(MANIFEST_FILE)}: no manifest (not a packed dataset, or the pack did not finish)"
            ) from None
        except json.JSONDecodeError as exc:  # a truncated or hand-edited manifest: say where, not a traceback
            raise SelectionError(f"{source.url(MANIFEST_FILE)}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        check_manifest(self.manifest, source.url(MANIFEST_FILE))
        self.shards = {
            s["path"]: ShardInfo(s["path"], int(s["bytes"]), s.get("sha256")) for s in self.manifest.get("shards", [])
        }
        self.format_version = int(self.manifest.get("format_version", 1))
        if self.format_version not in READABLE_FORMAT_VERSIONS:
            raise SelectionError(f"{source.url(MANIFEST_FILE)}: shard format {self.format_version} is not one this "
                                 f"reader knows ({', '.join(map(str, READABLE_FORMAT_VERSIONS))}); update flair-stream")
        self.suffixes = member_suffixes(self.manifest.get("codec"))
        self._columns: dict[str, pa.ChunkedArray] = {}
        self._table: pa.Table | None = None
        self._parquet = self._open_index()
        self.num_rows: int = self._parquet.metadata.num_rows
        self.column_names: list[str] = self._parquet.schema_arrow.names
        if checksum_column(META_SUFFIX) not in self.column_names:
            log.warning("%s: the index has no member checksums (shard format %d): members are read without "
                        "verification; re-pack with this version to check every member on read",
                        source.url(INDEX_FILE), self.format_version)
        used = pc.unique(self.column("shard").combine_chunks().dictionary).to_pylist()
        for path in used:
            check_relative_path(path, source.url(INDEX_FILE))
        missing = [s for s in used if s not in self.shards]
        if missing:
            raise SelectionError(f"{source.url(INDEX_FILE)}: rows point to shards absent from the manifest: {missing[:3]}")

    # ---------------------------------------------------------------- reading the index
    def _open_index(self, dictionary: Sequence[str] = DICTIONARY_COLUMNS) -> pq.ParquetFile:
        """The index's Parquet file, footer read, no column yet (`dictionary`: columns to read as codes)."""
        if isinstance(self.source, LocalSource):
            where: Any = os.path.join(self.source.base, INDEX_FILE)
        else:
            where = SourceFile(self.source, INDEX_FILE)
        return pq.ParquetFile(where, read_dictionary=list(dictionary), pre_buffer=True)

    def column(self, name: str) -> pa.ChunkedArray:
        """One index column (string columns that repeat arrive dictionary-encoded)."""
        return self._read([name])[name]

    def _read(self, names: Sequence[str]) -> dict[str, pa.ChunkedArray]:
        """Index columns by name, those not at hand read together (one pass over the file).

        Only the small dictionary-encoded columns are kept: a rank holds its selection's arrays
        for the whole run, not the index columns they were cut from.
        """
        unknown = [n for n in names if n not in self.column_names]
        if unknown:
            raise SelectionError(f"{self.source.url(INDEX_FILE)}: no column {unknown[0]!r}")
        out = {n: self._columns[n] for n in names if n in self._columns}
        todo = [n for n in dict.fromkeys(names) if n not in out]
        if todo:
            if self._table is not None:
                table = self._table.select(todo)
            else:
                # A remote index is a Python file object: pyarrow's own threads must not call into it
                # (they can still be waiting for the interpreter lock when it shuts down: "terminate called").
                table = self._parquet.read(columns=todo, use_threads=isinstance(self.source, LocalSource))
            for n in todo:
                col = table.column(n)
                if n in DICTIONARY_COLUMNS:  # one dictionary for all chunks (row groups), so codes compare
                    encoded = col.dictionary_encode() if self._table is not None else col
                    col = self._columns[n] = encoded.unify_dictionaries()
                out[n] = col
        return out

    @property
    def table(self) -> pa.Table:
        """The whole index (read on first use; selections never need it)."""
        if self._table is None:
            self._table = self._open_index(dictionary=()).read(use_threads=isinstance(self.source, LocalSource))
        return self._table

    def __getstate__(self) -> dict:
        # Sent to DataLoader workers with a selection's lazy counts: no columns, no open file.
        state = dict(self.__dict__)
        state["_columns"], state["_table"], state["_parquet"] = {}, None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._parquet = self._open_index()

    # ---------------------------------------------------------------- selections
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
        A member is present where its size column is set (what the reader reads).
        """
        self._check_packed(required)
        domains = list(domains or ())
        members = (META_SUFFIX, *required)
        with_checksums = checksum_column(META_SUFFIX) in self.column_names
        series = [name for name in required if name in TIME_SERIES_MODALITIES]
        needed = ["shard", "patch_id", "sample_index", *(c for name in members for c in member_columns(name))]
        needed += ["split"] if split is not None else []
        needed += [checksum_column(name) for name in members] if with_checksums else []
        needed += [dates_column(name) for name in series]
        needed += ["domain", "year"] if domains else []
        cols = self._read(needed)
        mask = np.ones(self.num_rows, dtype=bool)
        if split is not None:
            mask &= self._split_mask(cols["split"], split)
        for name in required:
            mask &= _as_numpy(cols[member_columns(name)[1]].is_valid())
        if domains:
            mask &= _domain_mask(cols["domain"], cols["year"], domains)
        if patch_ids is not None:
            mask &= _patch_id_mask(cols["patch_id"], patch_ids)
        self._filter_classes(mask, contains_class or {}, min_class_share or {})
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            raise SelectionError(f"no sample of split {split!r} matches the selection (required members {list(required)})")
        keep = _bool_array(mask)
        shard, shards = self._shard_numbers(cols["shard"], rows)
        return Selection(
            patch_ids=cols["patch_id"].filter(keep).to_pylist(),
            shard=shard,
            sample_index=_ints(cols, "sample_index", keep),
            members={name: tuple(_ints(cols, c, keep) for c in member_columns(name)) for name in members},
            shards=shards,
            class_counts=LazyCounts(self, rows),
            rows=rows,
            checksums={name: _ints(cols, checksum_column(name), keep, np.uint64) for name in members}
            if with_checksums else {},
            max_dates={name: int(_ints(cols, dates_column(name), keep).max(initial=0)) for name in series},
            format_version=self.format_version,
            suffixes=dict(self.suffixes),
            modality_table=dict(self.manifest.get("modalities", {})),
        )

    def _split_mask(self, column: pa.ChunkedArray, split: str) -> np.ndarray:
        """Rows of `split` (every split name of the index checked first: it becomes a path elsewhere)."""
        splits = column.combine_chunks()
        names = splits.dictionary.to_pylist()
        for name in names:
            check_split_name(name, self.source.url(INDEX_FILE))
        if split not in names:
            raise SelectionError(f"split {split!r} not in the index (has {sorted(names)})")
        return _as_numpy(splits.indices) == names.index(split)

    def _filter_classes(self, mask: np.ndarray, contains_class: Mapping[str, int],
                        min_class_share: Mapping[str, Mapping[int, float]]) -> None:
        """Clear in `mask` the rows without a task's class (`contains_class`) or with too little of it."""
        for task, c in contains_class.items():
            cnt = self._need_counts(task)
            if not 0 <= c < cnt.shape[1]:
                raise SelectionError(f"data.select.contains_class.{task}: class {c} outside 0..{cnt.shape[1] - 1}")
            mask &= cnt[:, c] > 0
        for task, shares in min_class_share.items():
            cnt = self._need_counts(task)
            total = np.maximum(cnt.sum(axis=1), 1)
            for c, share in shares.items():
                if not 0 <= int(c) < cnt.shape[1]:
                    raise SelectionError(f"data.select.min_class_share.{task}: class {c} outside 0..{cnt.shape[1] - 1}")
                mask &= cnt[:, int(c)] / total >= share

    def _shard_numbers(self, column: pa.ChunkedArray, rows: np.ndarray) -> tuple[np.ndarray, list[ShardInfo]]:
        """Each selected row's shard as a number into the selection's shards, numbered in path order."""
        shard_codes = column.combine_chunks()
        paths = shard_codes.dictionary.to_pylist()
        codes = _as_numpy(shard_codes.indices)[rows].astype(np.int64)
        used = np.flatnonzero(np.bincount(codes, minlength=len(paths)))
        by_path = sorted(used.tolist(), key=lambda k: paths[k])
        number = np.zeros(len(paths), dtype=np.int64)
        number[by_path] = np.arange(len(by_path))
        return number[codes], [self.shards[paths[k]] for k in by_path]

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

    def counts(self, task: str) -> np.ndarray:
        """Per-class pixel counts `(rows, n_classes)` of every index row for `task` (0 where unknown)."""
        col = self.column(COUNT_COLUMNS[task]).combine_chunks()
        n = N_CLASSES[task]
        out = np.zeros((len(col), n), dtype=np.int64)
        valid = _as_numpy(col.is_valid())
        lengths = np.diff(_as_numpy(col.offsets))[valid]
        if (lengths != n).any():
            raise SelectionError(f"index column {COUNT_COLUMNS[task]} has rows without {n} counts")
        out[valid] = _as_numpy(col.flatten()).reshape(-1, n)
        return out

    def _need_counts(self, task: str) -> np.ndarray:
        if task not in COUNT_COLUMNS or COUNT_COLUMNS[task] not in self.column_names:
            raise SelectionError(f"the index has no per-class counts for {task}")
        return self.counts(task)


class LazyCounts(Mapping):
    """A selection's per-class counts by task, read from the index only when asked for.

    Most runs never look at them (they serve class filters and class-balanced sampling), and at
    full scale they are the two heaviest index columns.
    """

    def __init__(self, catalog: Catalog, rows: np.ndarray) -> None:
        self.catalog, self.rows = catalog, rows
        self._tasks = [t for t, c in COUNT_COLUMNS.items() if c in catalog.column_names]
        self._loaded: dict[str, np.ndarray] = {}

    def __getitem__(self, task: str) -> np.ndarray:
        if task not in self._tasks:
            raise KeyError(task)
        if task not in self._loaded:
            self._loaded[task] = self.catalog.counts(task)[self.rows]
        return self._loaded[task]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


def _domain_mask(domain: pa.ChunkedArray, year: pa.ChunkedArray, domains: Sequence[str]) -> np.ndarray:
    """Rows whose domain (`D006`) or domain-year (`D006-2020`) is one of `domains`."""
    dom = domain.cast(pa.string())
    dom_year = pc.binary_join_element_wise(dom, pc.utf8_lpad(year.cast(pa.string()), 4, "0"), "-")
    wanted = pa.array(domains, type=pa.string())
    return _as_numpy(pc.or_(pc.is_in(dom, value_set=wanted), pc.is_in(dom_year, value_set=wanted)))


def _patch_id_mask(column: pa.ChunkedArray, patch_ids: Iterable[str] | str) -> np.ndarray:
    """Rows of the listed patch ids (`patch_ids`: ids, or a text file with one per line); every one must exist."""
    if isinstance(patch_ids, str):
        patch_ids = [ln.strip() for ln in Path(patch_ids).read_text().splitlines() if ln.strip()]
    wanted = pa.array(sorted(set(patch_ids)), type=pa.string())
    ids = column.combine_chunks()
    unknown = wanted.filter(pc.invert(pc.is_in(wanted, value_set=ids)))
    if len(unknown):
        raise SelectionError(f"patch ids not in the index: {unknown.to_pylist()[:5]}")
    return _as_numpy(pc.is_in(ids, value_set=wanted))


def _ints(cols: Mapping[str, pa.ChunkedArray], column: str, keep: pa.BooleanArray,
          dtype: type = np.int64) -> np.ndarray:
    values = cols[column].filter(keep)
    if values.null_count:
        raise SelectionError(f"index column {column} has missing values for selected rows")
    return _as_numpy(values).astype(dtype)


def _bool_array(mask: np.ndarray) -> pa.BooleanArray:
    """A numpy mask as an Arrow boolean array (without `pa.array`: see `_as_numpy`)."""
    bits = np.packbits(mask.astype(bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def _as_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A null-free integer or boolean Arrow array as numpy, straight from its buffers.

    Not with `to_numpy()`/`pa.array()`: their first call imports pandas (about a second of a
    rank's start-up and tens of MB, for a rank that never uses pandas otherwise).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    t = values.type
    if values.null_count or not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        return values.to_numpy(zero_copy_only=False)
    data = values.buffers()[1]
    if pa.types.is_boolean(t):
        bits = np.frombuffer(data, dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little", count=values.offset + len(values))[values.offset:].astype(bool)
    dtype = np.dtype(f"{'i' if pa.types.is_signed_integer(t) else 'u'}{t.bit_width // 8}")
    return np.frombuffer(data, dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize)


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
