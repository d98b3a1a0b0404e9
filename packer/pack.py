"""`pack_dataset`: a FLAIR-HUB tree -> shards per split + index.parquet + manifest.json.

Flow: discover -> plan (per split, shuffled with the seed) -> workers read and encode patches in
parallel -> the main process lays samples out in plan order into rolling shards, and its I/O thread
writes, hashes and syncs them (`packer.ordered_io`) -> index + manifest.

Resumable at shard granularity: a shard is written as `<name>.tar.partial`, renamed when complete,
then a sidecar `<out>/.pack/<split>-NNNNNN.json` records what it consumed and its index rows. A rerun
with the same options skips every shard whose sidecar matches the plan and continues from there;
since the plan and the encoding are deterministic, the result is byte-identical to an
uninterrupted run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import rasterio
from tqdm import tqdm

from packer import schema
from packer.card import dataset_card
from packer.discovery import Discovery, PatchSource, discover
from packer.encode_patch import EncodedSample, build_or_error, init_worker
from packer.errors import PackError, PatchError, naming
from packer.index import rows_to_table, write_index
from packer.manifest import file_sha256, json_text, modality_table, packer_version
from packer.ordered_io import OrderedIO
from packer.paths import check_relative_path, check_split_name
from packer.ranges import fetch_stats
from packer.shardformat.columns import INDEX_SCHEMA, member_columns
from packer.shardformat.encoding import compression_settings, manifest_codec, pack_format_version
from packer.shardformat.names import name_of_key
from packer.shardformat.writer import ShardFile, TarLayout, member_blocks
from packer.source_report import SourceReport
from packer.split_csv import parse_csv_argument
from packer.storage.retry import DEFAULT_ATTEMPTS
from packer.storage.write import OutputStore, open_store
from packer.tree import open_tree

DEFAULT_SHARD_SIZE = 256 * 10**6
STATE_DIR = ".pack"
SLOW_ENV = "FLAIR_PACK_TEST_DELAY_S"
"""Test hook only: seconds to sleep after writing each sample, so a test can kill a run mid-way."""
ON_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class PackOptions:
    """The options of `flair-pack` (CLI flags have the same names with dashes)."""

    modalities: tuple[str, ...] = schema.MODALITY_NAMES
    splits_csv: tuple[str, ...] = ()
    split_column: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    seed: int = 0
    keep_order: bool = False
    workers: int | None = None  # None: all cores
    level: int | dict[str, int] | None = None  # None: per-modality settings (packer.shardformat.encoding.DEFAULT_SETTINGS)
    shuffle: bool = False  # opt-in: wider dtypes as byte-shuffled Blosc `.npy.blosc` members (shard format 3)
    num_parts: int = 1
    part: int = 0
    on_error: str = "fail"
    progress: bool = True
    overwrite: bool = False  # write into a non-empty --out that holds no pack
    retries: int = DEFAULT_ATTEMPTS  # attempts per S3 operation (packer.storage.retry)
    src_list: str | None = None  # zips to read, one per line (for a web folder that cannot be listed)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "splits_csv", tuple(str(p) for p in self.splits_csv))
        for m in self.modalities:
            if m not in schema.MODALITIES:
                raise PackError("--modalities", f"unknown modality {m!r}; expected some of {', '.join(schema.MODALITY_NAMES)}")
        if not self.modalities:
            raise PackError("--modalities", "at least one modality is needed")
        if self.shard_size < 1:
            raise PackError("--shard-size", f"must be positive, got {self.shard_size}")
        if self.workers is not None and self.workers < 1:
            raise PackError("--workers", f"must be >= 1, got {self.workers}")
        levels = self.level.items() if isinstance(self.level, dict) else [("", self.level)]
        for name, level in levels:
            if name and name not in schema.MODALITIES:
                raise PackError("--level", f"unknown modality {name!r}")
            if level is not None and not 1 <= level <= 22:
                raise PackError("--level", f"zstd level must be 1..22, got {level}" + (f" for {name}" if name else ""))
        try:
            self.settings()
        except ValueError as exc:
            raise PackError("--level", str(exc)) from None
        if self.num_parts < 1 or not 0 <= self.part < self.num_parts:
            raise PackError("--part", f"need 0 <= part < num-parts, got part {self.part} of {self.num_parts}")
        if self.on_error not in ON_ERROR:
            raise PackError("--on-error", f"must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.retries < 1:
            raise PackError("--retries", f"must be >= 1, got {self.retries}")

    def settings(self) -> dict[str, dict]:
        """Each packed modality's member encoding (`packer.shardformat.encoding.compression_settings`)."""
        return {m: s for m, s in compression_settings(self.level, self.shuffle).items() if m in self.modalities}

    def recorded(self, src: str) -> dict:
        """The options that define the output (not workers/progress/overwrite/retries: they never change a byte).

        `src` is the source as `packer.tree.SourceTree.src` names it (an absolute path, or a URL
        pinned to a commit)."""
        d = asdict(self)
        for how_not_what in ("workers", "progress", "overwrite", "retries"):
            d.pop(how_not_what)
        if not self.shuffle:
            d.pop("shuffle")  # a default pack records what it did before the option existed (resumes still match)
        d["modalities"] = [m for m in schema.MODALITY_NAMES if m in self.modalities]
        # Absolute paths, so that a rerun from another working directory is recognised as the same.
        d["splits_csv"] = [_absolute_csv_arg(a) for a in self.splits_csv]
        d["src"] = src
        d["src_list"] = str(Path(self.src_list).resolve()) if self.src_list else None
        return d


def _absolute_csv_arg(arg: str) -> str:
    split, path = parse_csv_argument(arg)
    return f"{split}={Path(path).resolve()}"


@dataclass
class PackSummary:
    out: str
    patches: int
    shards: int
    bytes_in: int
    bytes_out: int
    elapsed_s: float
    splits: dict[str, int]
    skipped: list[dict] = field(default_factory=list)
    resumed_shards: int = 0
    not_in_splits: int = 0
    stream_s: float = 0.0  # from the first to the last sample written: the steady-state part of elapsed
    streamed: int = 0  # patches read in this run (not counting resumed shards)
    source: SourceReport | None = None  # zips read and bytes fetched (None for a plain folder)

    @property
    def ratio(self) -> float:
        return self.bytes_out / self.bytes_in if self.bytes_in else float("nan")

    def __str__(self) -> str:
        mb = 1e6
        lines = [
            f"packed {self.patches} patches into {self.shards} shards in {self.out} "
            f"({', '.join(f'{k}: {v}' for k, v in self.splits.items())})",
            f"bytes in {self.bytes_in / mb:.1f} MB -> out {self.bytes_out / mb:.1f} MB "
            f"(ratio {self.ratio:.3f}) in {self.elapsed_s:.1f} s "
            f"({self.patches / max(self.elapsed_s, 1e-9):.1f} patches/s, {self.bytes_in / mb / max(self.elapsed_s, 1e-9):.1f} MB/s in)",
        ]
        if self.resumed_shards:
            lines.append(f"resumed: {self.resumed_shards} shards were already complete")
        if self.not_in_splits:
            lines.append(f"left out: {self.not_in_splits} patches of the tree are not in the split CSVs/file")
        if self.source is not None:
            lines += self.source.lines(self.streamed)
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} patches (--on-error skip):")
            lines += [f"  {s['patch_id']}: {s['file']}: {s['error']}" for s in self.skipped]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Plan and resume state
# ------------------------------------------------------------------------------------------------
def split_order(splits: Iterable[str]) -> list[str]:
    s = set(splits)
    return [x for x in schema.SPLITS if x in s] + sorted(s - set(schema.SPLITS))


def make_plan(patches: list[PatchSource], seed: int, keep_order: bool) -> dict[str, list[PatchSource]]:
    """Per split, the order in which patches go into shards (shuffled so shards mix domains)."""
    plan: dict[str, list[PatchSource]] = {}
    for p in sorted(patches, key=lambda p: p.patch_id):
        check_split_name(p.split, p.patch_id)
        plan.setdefault(p.split, []).append(p)
    if not keep_order:
        for split, items in plan.items():
            random.Random(f"flair-pack:{seed}:{split}").shuffle(items)
    return {s: plan[s] for s in split_order(plan)}


def sidecar_rel(split: str, number: int) -> str:
    """The resume record of shard `number` of `split`, relative to the output."""
    return f"{STATE_DIR}/{Path(schema.shard_name(split, number)).stem}.json"


def _check_params(store: OutputStore, params: dict, overwrite: bool = False) -> None:
    """Claim `store` for a pack made with `params`, or refuse it (docs/reliability.md, overwrites).

    The same pack (its `.pack/params.json`, or with `.pack/` deleted its `manifest.json`, made with
    the same options) is resumed or redone; a pack made with other options is never replaced, even
    with `--overwrite` (delete it first); a non-empty folder that holds no pack needs `--overwrite`.
    """
    rel = f"{STATE_DIR}/params.json"
    if store.exists(rel):
        old, what = json.loads(store.read_text(rel)), "a pack"
    elif store.exists(schema.MANIFEST_FILE):
        old, what = json.loads(store.read_text(schema.MANIFEST_FILE)).get("parameters") or {}, "a finished dataset"
        old = {k: v for k, v in old.items() if k != "split_source"}  # found by discovery, not an option
    else:
        old, what = None, ""
        others = [e for e in store.entries() if e != STATE_DIR]
        if others and not overwrite:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise PackError(store, f"is not empty ({shown}) and holds no pack; use an empty or new --out, "
                                   "or pass --overwrite to write into it anyway")
    if old is not None:
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        if diff:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in diff)
            raise PackError(store, f"already holds {what} made with other options ({details}); use another --out "
                                   "or delete it first (--overwrite never replaces a pack)")
    store.write_text(rel, json_text(params))


def _read_sidecar(store: OutputStore, rel: str) -> dict:
    """A resume record, its shard path and split checked like a manifest's (`packer.paths`)."""
    side = json.loads(store.read_text(rel))
    check_relative_path(side["path"], f"{store}/{rel}")
    check_split_name(side["split"], f"{store}/{rel}")
    return side


def completed_shards(store: OutputStore, split: str, plan: list[PatchSource]) -> tuple[int, int]:
    """(patches consumed, shards complete) of `split` from earlier runs, checked against the plan."""
    pos = number = 0
    while store.exists(sc := sidecar_rel(split, number)):
        side = _read_sidecar(store, sc)
        consumed = side["consumed"]
        if consumed != [p.patch_id for p in plan[pos:pos + len(consumed)]]:
            raise PackError(f"{store}/{sc}", "an earlier run packed other patches here (source changed?); "
                                             "use a new --out")
        if store.size(side["path"]) != side["bytes"]:
            break  # the shard was damaged or removed after its sidecar: redo from here
        pos += len(consumed)
        number += 1
    # Later sidecars/shards belong to an interrupted attempt at what comes next: they get rewritten.
    stale = number
    while store.exists(sc := sidecar_rel(split, stale)):
        store.delete(sc)
        stale += 1
    local = store.local(split)
    for partial in local.glob("*.partial") if local.is_dir() else []:
        partial.unlink()
    return pos, number


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
class SplitWriter:
    """Rolls samples of one split into shards of about `target` bytes, each renamed when complete.

    Offsets and index rows are computed here, at once; the bytes, the closing of a shard (fsync,
    rename) and its sidecar go to the I/O thread `io`, in order, while the caller goes on encoding.
    """

    def __init__(self, store: OutputStore, split: str, first_number: int, target: int, io: OrderedIO):
        self.store, self.split, self.number, self.target, self.io = store, split, first_number, target, io
        self.file: ShardFile | None = None
        self.layout: TarLayout | None = None
        self.unfinished: list[ShardFile] = []  # opened, not yet renamed into place (read after io stops)
        self.rows: list[dict] = []
        self.consumed: list[str] = []
        self.skipped: list[dict] = []

    @property
    def rel_path(self) -> str:
        return schema.shard_name(self.split, self.number)

    def _open(self) -> None:
        local = self.store.local(self.rel_path)
        local.parent.mkdir(parents=True, exist_ok=True)
        self.file = ShardFile(local.with_name(local.name + ".partial"))
        self.unfinished.append(self.file)
        self.layout = TarLayout()

    def add(self, sample: EncodedSample) -> None:
        blocks = [member_blocks(name, data) for name, data in sample.members]
        size = sum(len(b) for member in blocks for b in member)
        if self.layout is not None and self.rows and self.layout.offset + size > self.target:
            self.close_shard()
        if self.layout is None:
            self._open()
        start = self.layout.offset
        row = dict(sample.row, shard=self.rel_path, sample_index=len(self.rows), offset=start)
        chunks: list[bytes] = []
        for (name, _), member in zip(sample.members, blocks):
            off, n = self.layout.add(member, chunks)
            col_off, col_size = member_columns(name_of_key(name[len(sample.patch_id) + 1:]))
            row[col_off], row[col_size] = off, n
        row["size"] = self.layout.offset - start
        self.io.submit(_write_chunks, self.file, chunks, nbytes=row["size"])
        self.rows.append(row)
        self.consumed.append(sample.patch_id)

    def skip(self, err: PatchError) -> None:
        self.consumed.append(err.patch_id)
        self.skipped.append(err.as_record())

    def close_shard(self) -> None:
        """Queue: end the tar, fsync, rename it into place, then record it (the sidecar marks completion)."""
        end = self.layout.end()
        record = {"path": self.rel_path, "split": self.split, "samples": len(self.rows), "bytes": self.layout.offset,
                  "consumed": self.consumed, "skipped": self.skipped, "rows": self.rows}
        self.io.submit(self._finish_shard, self.file, end, self.rel_path, sidecar_rel(self.split, self.number), record)
        self.number += 1
        self.file = self.layout = None
        self.rows, self.consumed, self.skipped = [], [], []

    def _finish_shard(self, file: ShardFile, end: bytes, rel: str, sidecar: str, record: dict) -> None:
        """On the I/O thread, after all the shard's bytes: complete it, put it in place, then record it."""
        with naming(file.path):
            file.write([end])
            record["sha256"] = file.close()
        if file.bytes != record["bytes"]:
            raise PackError(file.path, f"wrote {file.bytes} bytes but the index expects {record['bytes']}")
        self.store.put(file.path, rel)
        self.unfinished.remove(file)
        self.store.write_text(sidecar, json_text(record))

    def abort(self) -> None:
        """Drop the shards not yet in place (call once `io` has stopped): nothing half-written may remain."""
        for file in self.unfinished:
            file.discard()
        self.unfinished.clear()
        self.file = self.layout = None

    def finish(self) -> list[dict]:
        """Close the last shard; returns skip records not covered by a sidecar (trailing skips)."""
        if self.rows:
            self.close_shard()
        trailing, self.skipped, self.consumed = self.skipped, [], []
        return trailing


def _write_chunks(file: ShardFile, chunks: list[bytes]) -> None:
    with naming(file.path):  # a full disk is reported with the shard's path
        file.write(chunks)


def _start_pool(workers: int) -> ProcessPoolExecutor | None:
    """Start the worker processes at once, so their start-up overlaps discovery."""
    if workers == 1:
        return None
    # spawn, not fork: the parent uses GDAL (GeoPackages), which is not fork-safe.
    # Each worker ends with this process, even after a kill -9 (packer.lifetime).
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
                               initargs=(os.getpid(),))
    for _ in range(workers):
        pool.submit(int)  # a no-op that makes the pool start its processes now
    return pool


def _encoded(tasks: list[PatchSource], pool: ProcessPoolExecutor | None, workers: int,
             settings: dict[str, dict]) -> Iterator[EncodedSample | PatchError]:
    """Encoded samples in plan order; at most a few per worker in flight (bounded memory)."""
    if pool is None:
        with rasterio.Env():
            for t in tasks:
                yield build_or_error(t, settings)
        return
    it = iter(tasks)
    window = deque(pool.submit(build_or_error, t, settings) for t in islice(it, 3 * workers))
    while window:
        result = window.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            window.append(pool.submit(build_or_error, nxt, settings))
        yield result


def _format_errors(errors: list[PatchError], limit: int = 20) -> str:
    lines = [f"  {e.patch_id}: {e.path}: {e.problem}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
    return "\n".join(lines)


def pack_dataset(src: str | os.PathLike, out: str | os.PathLike, staging: str | os.PathLike | None = None,
                 **options) -> PackSummary:
    """Pack `src` into `out` (a folder or an s3:// URL; `staging`: local folder for the shard being
    written to S3); options are PackOptions' fields. Reruns resume; see module doc."""
    opts = PackOptions(**options)
    t0 = time.monotonic()
    src = str(src)
    workers = opts.workers or len(os.sched_getaffinity(0))

    pool = _start_pool(workers)
    try:
        return _pack(src, out, staging, opts, workers, pool, t0)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _pack(src: str, out: str | os.PathLike, staging: str | os.PathLike | None, opts: PackOptions, workers: int,
          pool: ProcessPoolExecutor | None, t0: float) -> PackSummary:
    """discover -> plan -> resume point -> stream samples into shards -> index + manifest."""
    fetched_before = fetch_stats()
    tree = open_tree(src, opts.modalities, opts.src_list, opts.progress, salvage=opts.on_error == "skip")
    disc = discover(tree, opts.modalities, opts.splits_csv, opts.split_column, opts.num_parts, opts.part)
    report = SourceReport.of(tree, fetch_stats() - fetched_before) if tree.has_zips else None
    if disc.errors and opts.on_error == "fail":
        raise PackError(src, f"{len(disc.errors)} patch(es) have problems; nothing was written "
                             f"(--on-error skip packs the others):\n{_format_errors(disc.errors)}")
    plan = make_plan(disc.patches, opts.seed, opts.keep_order)

    store = open_store(out, staging, retries=opts.retries)
    _check_params(store, opts.recorded(tree.src), opts.overwrite)
    for done_marker in (schema.MANIFEST_FILE, schema.INDEX_FILE):
        store.delete(done_marker)  # rewritten at the end; absent = incomplete

    start = {split: completed_shards(store, split, items) for split, items in plan.items()}
    tasks = [p for split, items in plan.items() for p in items[start[split][0]:]]
    io = OrderedIO()
    writers = {split: SplitWriter(store, split, start[split][1], opts.shard_size, io) for split in plan}
    resumed = sum(n for _, n in start.values())
    delay = float(os.environ.get(SLOW_ENV, "0") or 0)

    split_of = {p.patch_id: p.split for p in tasks}
    trailing_skips: list[dict] = []
    bar = tqdm(total=len(tasks), unit="patch", disable=not opts.progress, desc="flair-pack", dynamic_ncols=True)
    bytes_read = bytes_written = 0
    current: SplitWriter | None = None
    first_written: float | None = None
    try:
        for result in _encoded(tasks, pool, workers, opts.settings()):
            if first_written is None:
                first_written = time.monotonic()
            w = writers[split_of[result.patch_id]]
            if current is not None and w is not current:
                trailing_skips += current.finish()
            current = w
            if isinstance(result, PatchError):
                if opts.on_error == "fail":
                    raise PackError(result.path, f"{result.problem} (patch {result.patch_id}); stopped: complete "
                                    "shards are kept, no index/manifest written; fix the input and rerun to resume, "
                                    "or use --on-error skip")
                w.skip(result)
            else:
                w.add(result)
                if report is not None:
                    report.add(*result.fetched)
                bytes_read += result.source_bytes
                bytes_written += sum(len(d) for _, d in result.members)
                if delay:
                    time.sleep(delay)
            bar.update(1)
            elapsed = max(bar.format_dict["elapsed"], 1e-9)
            bar.set_postfix_str(f"{bytes_read / 1e6 / elapsed:.1f} MB/s in, {bytes_written / 1e6 / elapsed:.1f} MB/s out",
                                refresh=False)
        for w in writers.values():
            trailing_skips += w.finish()
        io.drain()
        stream_s = time.monotonic() - first_written if first_written is not None else 0.0
    except BaseException:
        io.close(cancel=True)
        for w in writers.values():
            w.abort()
        raise
    finally:
        io.close()
        bar.close()

    summary = _finalise(store, opts, tree.src, plan, disc, trailing_skips)
    summary.source = report
    summary.elapsed_s = time.monotonic() - t0
    summary.stream_s = stream_s
    summary.streamed = len(tasks)
    summary.resumed_shards = resumed
    return summary


def _finalise(store: OutputStore, opts: PackOptions, src: str, plan: dict[str, list[PatchSource]],
              disc: Discovery, trailing_skips: list[dict]) -> PackSummary:
    """Build index + manifest from the sidecars (the same whether or not the run was resumed)."""
    shards, tables, skipped = [], [], [e.as_record() for e in disc.errors] + trailing_skips
    split_sizes: dict[str, dict] = {}
    for split in plan:
        number = 0
        n = nbytes = 0
        while store.exists(sc := sidecar_rel(split, number)):
            side = _read_sidecar(store, sc)
            shards.append({k: side[k] for k in ("path", "split", "samples", "bytes", "sha256")})
            tables.append(rows_to_table(side["rows"]))
            skipped += side["skipped"]
            n += side["samples"]
            nbytes += side["bytes"]
            number += 1
        split_sizes[split] = {"samples": n, "shards": number, "bytes": nbytes}
    table = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
    index_path = write_index(store.work, table)
    index_sha = file_sha256(index_path)
    store.put(index_path, schema.INDEX_FILE)
    skipped.sort(key=lambda s: s["patch_id"])
    manifest = {
        "format_version": pack_format_version(opts.settings()),
        "packer_version": packer_version(),
        "parameters": opts.recorded(src) | {"split_source": disc.split_source},
        "codec": manifest_codec(opts.level, opts.modalities, opts.shuffle),
        "modalities": modality_table([m for m in schema.MODALITY_NAMES if m in opts.modalities]),
        "splits": split_sizes,
        "shards": shards,
        "index": {"path": schema.INDEX_FILE, "rows": table.num_rows, "sha256": index_sha},
        "skipped": skipped,
        "not_in_splits": disc.not_in_splits,
    }
    store.write_text(schema.CARD_FILE, dataset_card(manifest, table))
    store.write_text(schema.MANIFEST_FILE, json_text(manifest))  # last: its presence means complete
    return PackSummary(
        out=str(store), patches=table.num_rows, shards=len(shards),
        bytes_in=sum(v for v in table.column("source_bytes").to_pylist() if v),
        bytes_out=sum(s["bytes"] for s in shards), elapsed_s=0.0,
        splits={s: v["samples"] for s, v in split_sizes.items()}, skipped=skipped,
        not_in_splits=disc.not_in_splits,
    )
