"""Discovery of a FLAIR-HUB source tree: which patches exist, their files, split and dates.

Input is the real layout unchanged (`<root>/<DOMAIN>-<YEAR>_<MODALITY>/<ROI>/<file>.tif` and
`<root>/GLOBAL_ALL_MTD/*.gpkg`), as folders or as the Hub's zips, local or remote (`packer.tree`
says where each file is), or official split CSVs naming the files. Output is a list of
`PatchSource` records, small and picklable, that workers turn into samples. Problems confined to one
patch become `PatchError`s so that `--on-error` can decide; problems with the whole source raise
`PackError` at once.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from packer import schema
from packer.errors import PackError, PatchError
from packer.metadata import read_series_dates, read_single_dates, read_split_gpkg
from packer.patch import PatchSource
from packer.split_csv import parse_csv_argument, read_split_csv
from packer.tree import SourceTree, open_tree
from packer.zips import MEMBER, NO_ARCHIVE, Archive


@dataclass
class Discovery:
    """What discovery found: the patches to pack, and per-patch problems for `--on-error`."""

    patches: list[PatchSource]
    errors: list[PatchError]
    split_source: str  # "csv", "gpkg:<column>" or "default"
    not_in_splits: int = 0  # patches of the tree absent from the split CSVs / split file
    tree: SourceTree | None = None  # where the files are (zips read, members ignored)


def in_part(patch_id: str, num_parts: int, part: int) -> bool:
    """Deterministic 1/num_parts of the patches, stable whatever else the tree holds."""
    if num_parts == 1:
        return True
    h = int.from_bytes(hashlib.sha1(patch_id.encode()).digest()[:8], "big")
    return h % num_parts == part


def _collect(tree: SourceTree) -> tuple[dict[str, dict[str, str]], dict[tuple, dict[str, str]]]:
    """All patch files: {patch_id: {modality: tree path}} and historical files by location key."""
    by_patch: dict[str, dict[str, str]] = defaultdict(dict)
    historical: dict[tuple, dict[str, str]] = defaultdict(dict)
    for rel, parsed in tree.patch_files():
        if parsed.year is None:
            historical[parsed.location_key][parsed.modality] = rel
        else:
            by_patch[str(parsed.patch_id())][parsed.modality] = rel
    return by_patch, historical


def _attach_historical(by_patch: dict[str, dict[str, str]], historical: dict[tuple, dict[str, str]],
                       tree: SourceTree, known_ids: list[str]) -> None:
    """Historical files carry `195X`: give each to the patch(es) of the same location.

    The patch ids come from the other files found, else from `known_ids` (metadata files).
    """
    ids_by_loc: dict[tuple, list[str]] = defaultdict(list)
    for pid in sorted(by_patch):
        ids_by_loc[schema.PatchId.parse(pid).location_key].append(pid)
    if any(loc not in ids_by_loc for loc in historical):
        for pid in sorted(set(known_ids) - set(by_patch)):
            key = schema.PatchId.parse(pid).location_key
            if key in historical and not any(p in by_patch for p in ids_by_loc.get(key, ())):
                ids_by_loc[key].append(pid)
    for loc, mods in historical.items():
        if not ids_by_loc.get(loc):
            raise PackError(tree.where(next(iter(mods.values()))),
                            "historical file with no other modality of the same patch to give its year")
        for pid in ids_by_loc[loc]:
            by_patch.setdefault(pid, {}).update(mods)


def _files_from_csv(rows, tree: SourceTree, selected: list[str], errors: list[PatchError]) -> dict[str, dict[str, str]]:
    """The files each CSV row names, for the modalities being packed (the others need not exist)."""
    by_patch: dict[str, dict[str, str]] = {}
    for r in rows:
        files: dict[str, str] = {}
        pid = schema.PatchId.parse(r.patch_id)
        for mod, rel in r.files.items():
            if not rel or mod not in selected:
                continue
            try:
                parsed = schema.parse_file_name(rel)
                ok = parsed.modality == mod and parsed.location_key == pid.location_key
            except ValueError:
                ok = False
            if not ok:
                errors.append(PatchError(r.patch_id, r.csv_path, f"column {mod} names {rel!r}, not this patch's file"))
            elif not tree.has_file(rel):
                errors.append(PatchError(r.patch_id, tree.where(rel), f"listed in {r.csv_path} but not found"))
            else:
                files[mod] = rel
        by_patch[r.patch_id] = files
    return by_patch


def discover(src: "str | os.PathLike | SourceTree", modalities: tuple[str, ...] = schema.MODALITY_NAMES,
             splits_csv: tuple[str, ...] = (), split_column: str | None = None,
             num_parts: int = 1, part: int = 0) -> Discovery:
    """Find the patches to pack, with their files, split and dates, sorted by patch id.

    `src` is anything `packer.tree.open_tree` accepts (a folder, zips, a URL) or an opened tree,
    whose file listing is released once the patches carry what they need of it.
    """
    tree = src if isinstance(src, SourceTree) else open_tree(src, modalities)
    mtd = tree.metadata
    selected = [m for m in schema.MODALITY_NAMES if m in modalities]
    errors: list[PatchError] = []

    splits: dict[str, str] | None = None
    split_source = "default"
    singles: dict[str, dict[str, str]] = {}
    if splits_csv:
        rows = []
        for arg in splits_csv:
            split, path = parse_csv_argument(arg)
            rows.extend(read_split_csv(path, split))
        seen: dict[str, str] = {}
        for r in rows:
            if r.patch_id in seen:
                raise PackError(r.csv_path, f"patch {r.patch_id} is listed twice (also in {seen[r.patch_id]})")
            seen[r.patch_id] = r.csv_path
        splits = {r.patch_id: r.split for r in rows}
        by_patch = _files_from_csv(rows, tree, selected, errors)
        split_source = "csv"
    else:
        gpkg = read_split_gpkg(mtd, split_column)
        if gpkg is not None:
            splits, column = gpkg
            split_source = f"gpkg:{column}"
        by_patch, historical = _collect(tree)
        if historical:
            # The year of a historical (195X) file comes from the patch's other files, or, when
            # those are not being read (zips of other modalities are skipped), from the patch ids
            # of its dates file and of the split file.
            historical_mod = schema.modality("AERIAL-RLT_PAN").name
            singles[historical_mod] = read_single_dates(mtd, historical_mod)
            _attach_historical(by_patch, historical, tree, [*singles[historical_mod], *(splits or ())])
    if not by_patch:
        raise PackError(tree.src, "no FLAIR-HUB patch files found (expected <DOMAIN>-<YEAR>_<MODALITY>/<ROI>/*.tif)")

    # Keep the selected modalities, this part's patches, and patches that still have something.
    not_in_splits = 0
    chosen: dict[str, dict[str, str]] = {}
    with_errors = {e.patch_id for e in errors}
    for pid in sorted(by_patch):
        files = {m: by_patch[pid][m] for m in selected if m in by_patch[pid]}
        if not files and pid not in with_errors:
            continue  # nothing to pack (the patch only has other modalities)
        if splits is not None and pid not in splits:
            not_in_splits += 1
            continue
        if in_part(pid, num_parts, part):
            chosen[pid] = files
    errors = [e for e in errors if e.patch_id in chosen]
    if not chosen:
        raise PackError(tree.src, f"no patch has any of the modalities {selected}" +
                        (f" in part {part} of {num_parts}" if num_parts > 1 else ""))

    by_file: dict[str, dict[str, tuple[str, ...]]] = {}  # the S2 mask shares S2's file: read it once
    series = {}
    for m in selected:
        if schema.modality(m).time_series and any(m in f for f in chosen.values()):
            key = schema.dates_key(m)
            if key not in by_file:
                by_file[key] = read_series_dates(mtd, m)
            series[m] = by_file[key]
    for m in selected:
        if m in schema.SINGLE_DATE_FILES and m not in singles:
            singles[m] = read_single_dates(mtd, m)

    patches = []
    interned: dict[tuple, tuple] = {}
    root_text = str(tree.folder_root.resolve()) if tree.folder_root is not None else tree.src
    bad = {e.patch_id for e in errors}
    for pid, files in chosen.items():
        dates: dict[str, tuple[str, ...]] = {}
        for m in files:
            if m in series:
                if pid not in series[m]:
                    dates_file = mtd.where(schema.modality(m).dates_file)
                    errors.append(PatchError(pid, dates_file, f"no acquisition dates for this patch ({m} needs them)"))
                    bad.add(pid)
                    break
                elif not series[m][pid]:
                    errors.append(PatchError(pid, tree.where(files[m]), f"{m} has no dates (empty acquisition_dates)"))
                    bad.add(pid)
                    break
                else:
                    dates[m] = series[m][pid]
        if pid in bad:
            continue
        single = {m: singles[m][pid] for m in files if m in singles and pid in singles[m]}
        split = splits[pid] if splits is not None else "train"
        standard = schema.PatchId.parse(pid)
        overrides = {m: rel for m, rel in files.items() if rel != str(standard.relative_path(m))} or None
        mods = interned.setdefault(tuple(files), tuple(files))  # a handful of distinct tuples, shared
        archives, members = _members(tree, files, interned)
        patches.append(PatchSource(pid, split, root_text, mods, dates, single, overrides, archives, members))
    errors.sort(key=lambda e: (e.patch_id, e.path))
    tree.zipped.clear()  # the patches carry their members' records now (the listing of 2.5 M files is big)
    return Discovery(patches, errors, split_source, not_in_splits, tree)


def _members(tree: SourceTree, files: dict[str, str], interned: dict[tuple, tuple]) -> tuple[tuple[Archive, ...], bytes | None]:
    """The zip members of a patch's files as PatchSource stores them (None when all are plain files).

    Archive numbers are renumbered per patch so that a record names one of the patch's own
    archives; patches using the same zips share one archives tuple.
    """
    hits = [tree.zipped.get(rel) for rel in files.values()]
    if not any(hits):
        return (), None
    numbers = tuple(dict.fromkeys(h[0] for h in hits if h))
    local = {n: i for i, n in enumerate(numbers)}
    key = ("archives", numbers)
    if key not in interned:
        interned[key] = tuple(tree.archives[n] for n in numbers)
    blob = bytearray()
    for hit in hits:
        if hit is None:
            blob += MEMBER.pack(0, 0, 0, 0, 0, 0, 0, NO_ARCHIVE)
        else:
            fields = MEMBER.unpack(hit[1])
            blob += MEMBER.pack(*fields[:-1], local[hit[0]])
    return interned[key], bytes(blob)
