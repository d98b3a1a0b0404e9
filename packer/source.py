"""Discovery of a FLAIR-HUB source tree: which patches exist, their files, split and dates.

Input is the real layout unchanged (`<root>/<DOMAIN>-<YEAR>_<MODALITY>/<ROI>/<file>.tif` and
`<root>/GLOBAL_ALL_MTD/*.gpkg`), or official split CSVs naming the files. Output is a list of
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


@dataclass
class Discovery:
    """What discovery found: the patches to pack, and per-patch problems for `--on-error`."""

    patches: list[PatchSource]
    errors: list[PatchError]
    split_source: str  # "csv", "gpkg:<column>" or "default"
    not_in_splits: int = 0  # patches of the tree absent from the split CSVs / split file


def in_part(patch_id: str, num_parts: int, part: int) -> bool:
    """Deterministic 1/num_parts of the patches, stable whatever else the tree holds."""
    if num_parts == 1:
        return True
    h = int.from_bytes(hashlib.sha1(patch_id.encode()).digest()[:8], "big")
    return h % num_parts == part


def _walk_tree(root: Path) -> tuple[dict[str, dict[str, str]], dict[tuple, dict[str, str]]]:
    """All patch files: {patch_id: {modality: relpath}} and historical files by location key."""
    by_patch: dict[str, dict[str, str]] = defaultdict(dict)
    historical: dict[tuple, dict[str, str]] = defaultdict(dict)
    for folder in sorted(os.scandir(root), key=lambda e: e.name):
        if not folder.is_dir() or folder.name == schema.GLOBAL_MTD_FOLDER:
            continue
        try:
            domain, year, mod = schema.parse_folder_name(folder.name)
        except ValueError:
            continue  # unrelated folders (csv/, docs) are allowed beside the data
        for roi in sorted(os.scandir(folder.path), key=lambda e: e.name):
            if not roi.is_dir():
                continue
            for f in sorted(os.scandir(roi.path), key=lambda e: e.name):
                if not f.name.endswith(".tif"):
                    continue
                rel = f"{folder.name}/{roi.name}/{f.name}"
                try:
                    parsed = schema.parse_file_name(f.name)
                except ValueError as exc:
                    raise PackError(root / rel, str(exc)) from None
                if (parsed.domain, parsed.year, parsed.modality, parsed.roi) != (domain, year, mod, roi.name):
                    raise PackError(root / rel, f"file name does not match its folder {folder.name}/{roi.name}")
                if parsed.year is None:
                    historical[parsed.location_key][mod] = rel
                else:
                    by_patch[str(parsed.patch_id())][mod] = rel
    return by_patch, historical


def _attach_historical(by_patch: dict[str, dict[str, str]], historical: dict[tuple, dict[str, str]],
                       root: Path) -> None:
    """Historical files carry `195X`: give each to the patch(es) of the same location."""
    ids_by_loc: dict[tuple, list[str]] = defaultdict(list)
    for pid in sorted(by_patch):
        ids_by_loc[schema.PatchId.parse(pid).location_key].append(pid)
    for loc, mods in historical.items():
        if not ids_by_loc.get(loc):
            raise PackError(root / next(iter(mods.values())),
                            "historical file with no other modality of the same patch to give its year")
        for pid in ids_by_loc[loc]:
            by_patch.setdefault(pid, {}).update(mods)


def _files_from_csv(rows, root: Path, errors: list[PatchError]) -> dict[str, dict[str, str]]:
    by_patch: dict[str, dict[str, str]] = {}
    for r in rows:
        files: dict[str, str] = {}
        pid = schema.PatchId.parse(r.patch_id)
        for mod, rel in r.files.items():
            if not rel:
                continue
            try:
                parsed = schema.parse_file_name(rel)
                ok = parsed.modality == mod and parsed.location_key == pid.location_key
            except ValueError:
                ok = False
            if not ok:
                errors.append(PatchError(r.patch_id, r.csv_path, f"column {mod} names {rel!r}, not this patch's file"))
            elif not (root / rel).is_file():
                errors.append(PatchError(r.patch_id, root / rel, f"listed in {r.csv_path} but not found"))
            else:
                files[mod] = rel
        by_patch[r.patch_id] = files
    return by_patch


def discover(root: str | os.PathLike, modalities: tuple[str, ...] = schema.MODALITY_NAMES,
             splits_csv: tuple[str, ...] = (), split_column: str | None = None,
             num_parts: int = 1, part: int = 0) -> Discovery:
    """Find the patches to pack, with their files, split and dates, sorted by patch id."""
    root = Path(root)
    if not root.is_dir():
        raise PackError(root, "--src is not a directory")
    mtd_dir = root / schema.GLOBAL_MTD_FOLDER
    errors: list[PatchError] = []

    splits: dict[str, str] | None = None
    split_source = "default"
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
        by_patch = _files_from_csv(rows, root, errors)
        split_source = "csv"
    else:
        if not mtd_dir.is_dir() and not any(e.is_dir() for e in os.scandir(root)):
            raise PackError(root, "--src is empty: expected FLAIR-HUB modality folders and GLOBAL_ALL_MTD/")
        gpkg = read_split_gpkg(mtd_dir, split_column)
        if gpkg is not None:
            splits, column = gpkg
            split_source = f"gpkg:{column}"
        by_patch, historical = _walk_tree(root)
        _attach_historical(by_patch, historical, root)
    if not by_patch:
        raise PackError(root, "no FLAIR-HUB patch files found (expected <DOMAIN>-<YEAR>_<MODALITY>/<ROI>/*.tif)")

    # Keep the selected modalities, this part's patches, and patches that still have something.
    selected = [m for m in schema.MODALITY_NAMES if m in modalities]
    not_in_splits = 0
    chosen: dict[str, dict[str, str]] = {}
    for pid in sorted(by_patch):
        if splits is not None and pid not in splits:
            not_in_splits += 1
            continue
        if not in_part(pid, num_parts, part):
            continue
        files = {m: by_patch[pid][m] for m in selected if m in by_patch[pid]}
        if files or any(e.patch_id == pid for e in errors):
            chosen[pid] = files
    errors = [e for e in errors if e.patch_id in chosen]
    if not chosen:
        raise PackError(root, f"no patch has any of the modalities {selected}" +
                        (f" in part {part} of {num_parts}" if num_parts > 1 else ""))

    by_file: dict[str, dict[str, tuple[str, ...]]] = {}  # the S2 mask shares S2's file: read it once
    series = {}
    for m in selected:
        if schema.modality(m).time_series and any(m in f for f in chosen.values()):
            key = schema.dates_key(m)
            if key not in by_file:
                by_file[key] = read_series_dates(mtd_dir, m)
            series[m] = by_file[key]
    singles = {m: read_single_dates(mtd_dir, m) for m in selected if m in schema.SINGLE_DATE_FILES}

    patches = []
    interned: dict[tuple[str, ...], tuple[str, ...]] = {}
    root_text = str(root.resolve())
    bad = {e.patch_id for e in errors}
    for pid, files in chosen.items():
        dates: dict[str, tuple[str, ...]] = {}
        for m in files:
            if m in series:
                if pid not in series[m]:
                    dates_file = mtd_dir / schema.SENTINEL_DATES_FILES[schema.dates_key(m)]
                    errors.append(PatchError(pid, dates_file, f"no acquisition dates for this patch ({m} needs them)"))
                    bad.add(pid)
                    break
                elif not series[m][pid]:
                    errors.append(PatchError(pid, root / files[m], f"{m} has no dates (empty acquisition_dates)"))
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
        patches.append(PatchSource(pid, split, root_text, mods, dates, single, overrides))
    errors.sort(key=lambda e: (e.patch_id, e.path))
    return Discovery(patches, errors, split_source, not_in_splits)
