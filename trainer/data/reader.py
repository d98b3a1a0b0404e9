"""Read one sample's members out of its shard with ranged reads, check them, and decode them.

Only the members the config needs are fetched (an aerial-only run never downloads the Sentinel
series); members that sit next to each other in the tar are fetched with one read. Before the
first read of a shard in a process its size is checked against the manifest, and, when
verification is on, its sha256 (one extra full read of that shard per process).

Every member read is checked against the xxh3_64 the index records for it (format-2 packs; the
JSON member included), decoded with the one member decoder (`packer.shardformat.encoding`), and
checked by the format's own rule (`packer.shardformat.reader.check_array`): each array must have
the dtype and pixel size the pack's manifest declares for its modality (no silent cast
downstream). Any failure is a `SampleError` whose message is one line naming the shard URL, the
patch id and the member.

With a `DecodedCache` (opt-in, `data.decoded_cache`), members found there are neither read from
the shard nor decompressed; the others are decoded as usual and then added to it.

No torch here: this module (and what it imports) is the raw-sample API's base.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Sequence

import numpy as np

from packer.shardformat.encoding import (Arena, MemberError, array_from_payload, decode_array, decode_array_into,
                                        decode_json, member_checksum)
from packer.shardformat.names import ARRAY_SUFFIX, META_SUFFIX, any_member_name
from packer.shardformat.reader import check_array
from packer.storage.read import LocalSource, ShardIntegrityError, Source, check_shard
from trainer.data.catalog import Selection
from trainer.data.decoded_cache import DecodedCache


class SampleError(ShardIntegrityError):
    """One sample cannot be used: a member is damaged, does not decode or does not fit the schema.

    `str()` is one line: `<shard url>: <patch id>: <member>: <problem>`.
    """

    def __init__(self, url: str, patch_id: str, member: str, problem: str) -> None:
        super().__init__(f"{url}: {patch_id}: {member}: {problem}")
        self.url, self.patch_id, self.member, self.problem = url, patch_id, member, problem

    def __reduce__(self):  # crosses process boundaries intact (DataLoader workers)
        return SampleError, (self.url, self.patch_id, self.member, self.problem)


def coalesce(ranges: Sequence[tuple[int, int]], max_gap: int) -> list[tuple[int, int, list[int]]]:
    """Group `(offset, size)` ranges whose gaps are <= `max_gap` into `(start, length, members)` reads."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    groups: list[tuple[int, int, list[int]]] = []
    for i in order:
        off, size = ranges[i]
        if groups and off - (groups[-1][0] + groups[-1][1]) <= max_gap:
            start, length, members = groups[-1]
            groups[-1] = (start, max(length, off + size - start), members + [i])
        else:
            groups.append((off, size, [i]))
    return groups


class SampleReader:
    """Raw samples `{"patch_id", "meta", "arrays"}` of a selection, by row number."""

    def __init__(self, source: Source, selection: Selection, needed: Sequence[str], verify: bool = False,
                 max_gap: int | None = None, check_members: bool = True, cache: DecodedCache | None = None) -> None:
        self.source = source
        self.cache = cache
        self.selection = selection
        self.needed = tuple(needed)
        self.verify = verify
        self.check_members = check_members  # per-member checksums (a switch for the benchmark's cost row)
        # Local reads are cheap syscalls: only merge true neighbours. Remote reads pay a round
        # trip each: merging through a skipped member is cheaper up to a few MB.
        self.max_gap = max_gap if max_gap is not None else (4096 if isinstance(source, LocalSource) else 4 << 20)
        self._checked: set[int] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_checked"] = set()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def shard_url(self, row: int) -> str:
        return self.source.url(self.selection.shards[int(self.selection.shard[row])].path)

    def member_name(self, row: int, name: str) -> str:
        """The tar member name of `name` ("json" or a modality) in row `row`'s sample."""
        return any_member_name(self.selection.patch_ids[row], name, self._suffix(name))

    def _suffix(self, name: str) -> str:
        return self.selection.suffixes.get(name, ARRAY_SUFFIX)

    def _check(self, shard: int) -> None:
        if shard in self._checked:
            return
        with self._lock:
            if shard in self._checked:
                return
            info = self.selection.shards[shard]
            check_shard(self.source, info.path, info.bytes, info.sha256, full=self.verify)
            self._checked.add(shard)

    def _error(self, row: int, name: str, problem: str) -> SampleError:
        return SampleError(self.shard_url(row), self.selection.patch_ids[row], self.member_name(row, name), problem)

    def read_members(self, row: int, names: Sequence[str] | None = None) -> dict[str, memoryview]:
        """The stored bytes of the needed members (and the JSON metadata) of selected row `row`
        (or of `names` only), each checked against the index's checksum."""
        sel = self.selection
        shard = int(sel.shard[row])
        self._check(shard)
        names = (META_SUFFIX, *self.needed) if names is None else tuple(names)
        if not names:
            return {}
        ranges = [(int(sel.members[n][0][row]), int(sel.members[n][1][row])) for n in names]
        path = sel.shards[shard].path
        out: dict[str, memoryview] = {}
        for start, length, members in coalesce(ranges, self.max_gap):
            view = memoryview(self.source.read_range(path, start, length))
            for i in members:
                off, size = ranges[i]
                out[names[i]] = view[off - start: off - start + size]
        if self.check_members and sel.checksums:
            for name, data in out.items():
                want = int(sel.checksums[name][row])
                got = member_checksum(data)
                if got != want:
                    raise self._error(row, name, f"xxh3_64 {got:016x} differs from the index's {want:016x} "
                                                 "(damaged member)")
        return out

    def _meta(self, row: int, data: memoryview) -> dict[str, Any]:
        try:
            meta = decode_json(data)
        except MemberError as exc:
            raise self._error(row, META_SUFFIX, str(exc)) from None
        pid = self.selection.patch_ids[row]
        if meta.get("patch_id", pid) != pid:
            raise self._error(row, META_SUFFIX, f"holds the metadata of {meta.get('patch_id')} (index and shard disagree)")
        return meta

    def _array(self, row: int, name: str, data: memoryview, arena: Arena | None) -> np.ndarray:
        version, suffix = self.selection.format_version, self._suffix(name)
        try:
            arr = decode_array(data, format_version=version, suffix=suffix) if arena is None else \
                decode_array_into(data, arena, format_version=version, suffix=suffix)
        except MemberError as exc:
            raise self._error(row, name, str(exc)) from None
        return self._checked_array(row, name, arr)

    def _checked_array(self, row: int, name: str, arr: np.ndarray) -> np.ndarray:
        problem = check_array(name, arr, self.selection.modality_table.get(name))
        if problem:
            raise self._error(row, name, problem)
        return arr

    def read(self, row: int, arena: Arena | None = None) -> dict[str, Any]:
        """Read, check and decode one sample.

        Without `arena` the arrays are read-only views of their own decompressed bytes (keep them
        as long as you like); with one, they live in `arena` until its next `reset()`.
        """
        if self.cache is not None:
            return self._read_cached(row, arena)
        members = self.read_members(row)
        meta = self._meta(row, members.pop(META_SUFFIX))
        arrays = {name: self._array(row, name, data, arena) for name, data in members.items()}
        return {"patch_id": self.selection.patch_ids[row], "meta": meta, "arrays": arrays}

    # ---------------------------------------------------------------- with the decoded cache
    def _cache_key(self, row: int, name: str) -> tuple[str, int, str] | None:
        sha = self.selection.shards[int(self.selection.shard[row])].sha256
        if not sha:  # no content hash in the manifest: nothing safe to key on
            return None
        return sha, int(self.selection.members[name][0][row]), "json" if name == META_SUFFIX else "npy"

    def _read_cached(self, row: int, arena: Arena | None) -> dict[str, Any]:
        into = arena.take if arena is not None else (lambda n: memoryview(np.empty(n, dtype=np.uint8)))
        names = (META_SUFFIX, *self.needed)
        keys = {name: self._cache_key(row, name) for name in names}
        meta, arrays = None, {}
        for name, key in keys.items():
            payload = self.cache.get(*key, into) if key else None
            if payload is None:
                continue
            try:
                if name == META_SUFFIX:
                    meta = self._meta(row, payload)
                else:
                    arrays[name] = self._checked_array(row, name, array_from_payload(payload))
            except (MemberError, SampleError) as exc:
                self.cache.drop(*key, str(exc))
        missing = [n for n in names if (n == META_SUFFIX and meta is None) or (n != META_SUFFIX and n not in arrays)]
        for name, data in self.read_members(row, missing).items():
            key = keys[name]
            if name == META_SUFFIX:
                meta = self._meta(row, data)
                if key:
                    self.cache.put(*key, data)
                continue
            arrays[name] = arr = self._array(row, name, data, arena)
            if key:
                self.cache.put(*key, _npy_header(arr), _data_view(arr))
        arrays = {name: arrays[name] for name in self.needed}
        return {"patch_id": self.selection.patch_ids[row], "meta": meta, "arrays": arrays}


def _npy_header(arr: np.ndarray) -> bytes:
    """The header `np.save` writes before `arr`'s bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    return buf.getvalue()


def _data_view(arr: np.ndarray) -> memoryview:
    """`arr`'s bytes in the order its header says (C, or Fortran order), without a copy."""
    if arr.flags.c_contiguous:
        return memoryview(arr.reshape(-1)).cast("B")
    return memoryview(arr.T.reshape(-1)).cast("B")
