"""Where the files of a FLAIR-HUB tree lie: extracted folders, local zips, or zips on a web server.

`open_tree(src)` accepts what a user has:

- a folder holding the tree (`<DOMAIN>-<YEAR>_<MODALITY>/<ROI>/*.tif`, `GLOBAL_ALL_MTD/`), the
  Hub's zips (`*.zip`, or `data/*.zip`), or a mix of both (a domain extracted by hand);
- a single zip (e.g. the IGN toy dataset `FLAIR-HUB_TOY_DATASET.zip`);
- `hf://datasets/<owner>/<name>[@rev][/<path>]`: the repository is listed with the Hub's tree API,
  at the commit its revision points to when the pack starts (so a pack reads one snapshot);
- `https://.../datasets/<owner>/<name>/resolve/<rev>/<path>` (the same, through a resolve URL), or
  any `http(s)://` folder together with a list of its zips (`src_list`).

Zips are never extracted: their central directories are read (once each, in the main process) and
every member whose path follows the tree grammar, under any leading folder, becomes a file of the
tree: `[<prefix>/]<DOMAIN>-<YEAR>_<MODALITY>/<ROI>/<file>.tif` or `[<prefix>/]GLOBAL_ALL_MTD/*.gpkg`.
Other members are ignored and listed. A zip named after a modality folder that is not being packed
(`D004-2021_AERIAL_RGBI.zip` without `AERIAL_RGBI` in `--modalities`) is not read at all. Two
sources holding the same file (two zips, or a zip and a folder) are an error naming both.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from tqdm import tqdm

from packer import schema
from packer.errors import PackError
from packer.hub import HfPath, hf_endpoint, hub_path_of_https, token_note
from packer.metadata import MetadataFiles
from packer.ranges import HttpStatusError, get_json, is_url, reader_for
from packer.zips import Archive, Directory, Member, MemberError, read_directory, read_member

ZIP_SUFFIX = ".zip"
DATA_LEVEL = "data"
"""The Hub keeps its zips under `data/`; a local copy may keep that level or not."""
REMOTE_THREADS = 8
"""Central directories read at once from a remote source."""


@dataclass
class SourceTree:
    """The files of one `--src`: tree path -> where its bytes are."""

    src: str  # as recorded in the manifest: an absolute path, or a URL pinned to a commit
    folder_root: Path | None = None  # the level holding extracted modality folders, if any
    archives: list[Archive] = field(default_factory=list)
    zipped: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # tree path -> (archive no., member record)
    metadata: MetadataFiles = field(default_factory=lambda: MetadataFiles("GLOBAL_ALL_MTD", {}))
    ignored: list[str] = field(default_factory=list)  # zip members outside the grammar (where-strings)
    zips_read: int = 0
    zip_bytes: int = 0  # total size of the zips read
    zips_skipped: list[str] = field(default_factory=list)  # named after a modality not packed: not read
    warnings: list[str] = field(default_factory=list)  # zips salvaged without their end (see packer.zips)

    @property
    def has_zips(self) -> bool:
        return self.zips_read > 0 or bool(self.zips_skipped)

    def where(self, rel: str) -> str:
        """A file of the tree as messages name it (a path, or `<zip>!/<member>`)."""
        hit = self.zipped.get(rel)
        if hit is not None:
            return self.archives[hit[0]].where(rel)
        return str((self.folder_root or Path(self.src)) / rel)

    def has_file(self, rel: str) -> bool:
        return rel in self.zipped or (self.folder_root is not None and (self.folder_root / rel).is_file())

    def patch_files(self) -> Iterator[tuple[str, schema.ParsedFile]]:
        """Every patch file of the tree: (tree path, parsed name), folders first, then zip members."""
        if self.folder_root is not None:
            yield from _walk_folders(self.folder_root, self.zipped, self.archives)
        for rel in self.zipped:
            yield rel, schema.parse_file_name(rel)


# ------------------------------------------------------------------------------------------------
# Classifying paths (folders and zip members alike)
# ------------------------------------------------------------------------------------------------
def _walk_folders(root: Path, zipped: dict[str, tuple[int, bytes]], archives: list[Archive]
                  ) -> Iterator[tuple[str, schema.ParsedFile]]:
    """Files of the extracted modality folders under `root`; a file also in a zip is an error."""
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
                if rel in zipped:
                    raise PackError(root / rel, f"the same file is also in {archives[zipped[rel][0]].where(rel)}; "
                                                "keep only one of them (move the zip or the folder away)")
                yield rel, parsed


def tree_path(name: str) -> tuple[str, str, str | None] | None:
    """A zip member name -> (prefix, tree path, modality or None for a GeoPackage), or None if it
    is not a file of the tree. Names with `..`, absolute names and backslashes never are."""
    if name.startswith("/") or "\\" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    if len(parts) >= 2 and parts[-2] == schema.GLOBAL_MTD_FOLDER and parts[-1].endswith(".gpkg"):
        return "/".join(parts[:-2] + [""]) if len(parts) > 2 else "", "/".join(parts[-2:]), None
    if len(parts) < 3 or not parts[-1].endswith(".tif"):
        return None
    folder, roi, fname = parts[-3:]
    try:
        domain, year, mod = schema.parse_folder_name(folder)
        parsed = schema.parse_file_name(fname)
    except ValueError:
        return None
    if (parsed.domain, parsed.year, parsed.modality, parsed.roi) != (domain, year, mod, roi):
        return None
    return ("/".join(parts[:-3] + [""]) if len(parts) > 3 else ""), "/".join(parts[-3:]), mod


def modality_hint(zip_name: str) -> str | None:
    """The modality a zip's name says it holds (`D004-2021_AERIAL_RGBI.zip`, also with one extra
    `_<WORD>` such as `_IMS`), or None when the name says nothing (`GLOBAL_ALL_MTD.zip`, others)."""
    stem = PurePosixPath(zip_name).name[: -len(ZIP_SUFFIX)]
    for candidate in (stem, stem.rsplit("_", 1)[0]):
        try:
            return schema.parse_folder_name(candidate)[2]
        except ValueError:
            continue
    return None


# ------------------------------------------------------------------------------------------------
# Building a tree
# ------------------------------------------------------------------------------------------------
class _Builder:
    """Collects folders and zip directories into a SourceTree, checking for duplicates."""

    def __init__(self, tree: SourceTree, modalities: tuple[str, ...], progress: bool, salvage: bool):
        self.tree = tree
        self.modalities = set(modalities)
        self.progress, self.salvage = progress, salvage
        self.archive_no: dict[Archive, int] = {}
        self.mtd: dict[str, tuple[str, object]] = {}

    def read(self, zips: list[str]) -> None:
        """Read the central directory of each zip worth reading (remote ones several at a time).

        Not worth reading: a zip named after a modality that is not being packed."""
        locations = []
        for z in zips:
            hint = modality_hint(z.rsplit("/", 1)[-1])
            (self.tree.zips_skipped if hint is not None and hint not in self.modalities else locations).append(z)
        bar = tqdm(total=len(locations), unit="zip", desc="zip directories",
                   disable=not self.progress or len(locations) < 2)

        def one(location: str) -> Directory:
            directory = read_directory(reader_for(location), self.salvage)
            bar.update(1)
            return directory

        try:
            if any(is_url(loc) for loc in locations) and len(locations) > 1:
                with ThreadPoolExecutor(REMOTE_THREADS) as pool:
                    directories = list(pool.map(one, locations))
            else:
                directories = [one(loc) for loc in locations]
        finally:
            bar.close()
        for d in directories:  # in the order given: archive numbers do not depend on timing
            self.add_directory(d)

    def archive(self, location: str, prefix: str) -> int:
        key = Archive(location, prefix)
        if key not in self.archive_no:
            self.archive_no[key] = len(self.tree.archives)
            self.tree.archives.append(key)
        return self.archive_no[key]

    def add_directory(self, d: Directory) -> None:
        tree = self.tree
        tree.zips_read += 1
        tree.zip_bytes += d.size
        location = d.location
        if d.cut:
            tree.warnings.append(f"{location}: {d.cut}")
        for m in d.members:
            found = tree_path(m.name)
            if found is None:
                tree.ignored.append(f"{location}!/{m.name}")
                continue
            prefix, rel, mod = found
            if mod is not None and mod not in self.modalities:
                continue
            number = self.archive(location, prefix)
            where = tree.archives[number].where(rel)
            if mod is None:
                name = PurePosixPath(rel).name
                if name in self.mtd:
                    raise PackError(where, f"the same GeoPackage is also in {self.mtd[name][0]}; keep only one")
                self.mtd[name] = (where, (location, m))
                continue
            if rel in tree.zipped:
                other = tree.archives[tree.zipped[rel][0]].where(rel)
                raise PackError(where, f"the same patch file is also in {other}; keep only one of the two zips")
            tree.zipped[rel] = (number, m.record(number))

    def finish(self, mtd_folder: Path | None) -> SourceTree:
        files: dict = {}
        if mtd_folder is not None:
            folder = MetadataFiles.folder(mtd_folder)
            for name in folder.files:
                if name in self.mtd:
                    raise PackError(folder.where(name), f"the same GeoPackage is also in {self.mtd[name][0]}; keep only one")
            files.update(folder.files)
        for name, (where, (location, member)) in self.mtd.items():
            files[name] = (where, lambda location=location, member=member, where=where: _member_bytes(location, member, where))
        label = str(mtd_folder) if mtd_folder is not None else f"{self.tree.src}/{schema.GLOBAL_MTD_FOLDER}"
        self.tree.metadata = MetadataFiles(label, files)
        return self.tree


def _member_bytes(location: str, member: Member, where: str) -> bytes:
    try:
        return read_member(reader_for(location), member)
    except MemberError as exc:
        raise PackError(where, str(exc)) from None


def open_tree(src: str | os.PathLike, modalities: tuple[str, ...] = schema.MODALITY_NAMES,
              src_list: str | os.PathLike | None = None, progress: bool = False, salvage: bool = False) -> SourceTree:
    """The SourceTree of `src` (see the module docstring); `modalities` decides which zips are read.

    `salvage` (`--on-error skip`) keeps what precedes the cut of a local zip whose end is missing
    instead of stopping (`packer.zips.read_directory`)."""
    text = str(src)
    builder = _Builder(SourceTree(text), modalities, progress, salvage)
    if text.startswith("hf://") or is_url(text):
        return _open_remote(builder, text, src_list)
    path = Path(text)
    if path.is_file() and path.suffix.lower() == ZIP_SUFFIX:
        builder.tree.src = str(path.resolve())
        builder.read([builder.tree.src])
        return builder.finish(None)
    if not path.is_dir():
        raise PackError(path, "--src is not a directory, a .zip file or an hf:// / http(s):// URL")
    return _open_local_folder(builder, path, src_list)


def _open_local_folder(builder: _Builder, root: Path, src_list: str | os.PathLike | None) -> SourceTree:
    tree = builder.tree
    tree.src = str(root.resolve())
    levels = [root] + ([root / DATA_LEVEL] if (root / DATA_LEVEL).is_dir() else [])
    zips: list[str] = []
    folder_levels: list[Path] = []
    mtd_folder: Path | None = None
    for level in levels:
        entries = sorted(os.scandir(level), key=lambda e: e.name)
        zips += [os.path.abspath(e.path) for e in entries if e.is_file() and e.name.lower().endswith(ZIP_SUFFIX)]
        if any(e.is_dir() and _is_modality_folder(e.name) for e in entries):
            folder_levels.append(level)
        if (level / schema.GLOBAL_MTD_FOLDER).is_dir() and mtd_folder is None:
            mtd_folder = level / schema.GLOBAL_MTD_FOLDER
    if src_list is not None:
        zips = [str((root / name).resolve()) if not os.path.isabs(name) else name for name in _read_list(src_list)]
    if len(folder_levels) > 1:
        raise PackError(root, f"extracted modality folders both in {root} and in {root / DATA_LEVEL}: keep one level")
    if not zips and not folder_levels and mtd_folder is None and not any(e.is_dir() for e in os.scandir(root)):
        raise PackError(root, "--src is empty: expected FLAIR-HUB modality folders or zips, and GLOBAL_ALL_MTD")
    tree.folder_root = folder_levels[0] if folder_levels else root
    builder.read(zips)
    return builder.finish(mtd_folder)


def _is_modality_folder(name: str) -> bool:
    try:
        schema.parse_folder_name(name)
        return True
    except ValueError:
        return False


def _read_list(src_list: str | os.PathLike) -> list[str]:
    """`--src-list`: one zip per line (relative to --src, or absolute), `#` comments and blank lines ignored."""
    path = Path(src_list)
    if not path.is_file():
        raise PackError("--src-list", f"{path}: no such file")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    if not names:
        raise PackError("--src-list", f"{path} lists no zip")
    return names


# ------------------------------------------------------------------------------------------------
# Remote sources
# ------------------------------------------------------------------------------------------------
def _open_remote(builder: _Builder, src: str, src_list: str | os.PathLike | None) -> SourceTree:
    if src.startswith("hf://"):
        try:
            hub, endpoint = HfPath.parse(src), hf_endpoint()
        except ValueError as exc:
            raise PackError("--src", str(exc)) from None
    else:
        found = hub_path_of_https(src)
        hub, endpoint = (found[1], found[0]) if found else (None, None)
    if src_list is not None:
        base = hub.resolve_url(endpoint) if hub is not None else src.rstrip("/")
        recorded = hub.url() if hub is not None else src.rstrip("/")
        zips = [n if is_url(n) else f"{base}/{n.lstrip('/')}" for n in _read_list(src_list)]
    elif hub is not None:
        hub = hub.at(_commit(hub, endpoint))
        recorded = hub.url()
        zips = [hub.resolve_url(endpoint, path) for path in _list_zips(hub, endpoint)]
        if not zips:
            raise PackError(src, f"no .zip file under {hub.path or 'the repository root'} at {hub.revision}")
    else:
        raise PackError(src, "cannot list the zips of a plain web folder: give a Hub URL (hf://datasets/... or "
                             ".../datasets/<owner>/<name>/resolve/<rev>/...) or pass --src-list FILE")
    builder.tree.src = recorded
    builder.read(zips)
    return builder.finish(None)


def _commit(hub: HfPath, endpoint: str) -> str:
    """The commit the revision points to now (the Hub's revision API)."""
    url = hub.revision_api_url(endpoint)
    try:
        info, _ = get_json(url)
    except HttpStatusError as exc:
        if exc.status == 404:
            raise PackError(url, f"dataset {hub.repo_id} or revision {hub.revision!r} not found "
                                 f"(HTTP 404; {token_note()}: a private repository answers 404 without a token)") from None
        raise
    sha = info.get("sha") if isinstance(info, dict) else None
    if not isinstance(sha, str) or not sha:
        raise PackError(url, "the revision API gave no commit sha")
    return sha


def _list_zips(hub: HfPath, endpoint: str) -> list[str]:
    """Paths of the `.zip` files under `hub.path` (recursive), following the listing's pages."""
    url: str | None = hub.tree_api_url(endpoint)
    paths = []
    while url:
        page, url = get_json(url)
        if not isinstance(page, list):
            raise PackError(hub.tree_api_url(endpoint), f"the tree API answered {type(page).__name__}, not a list")
        paths += [e["path"] for e in page if isinstance(e, dict) and e.get("type") == "file"
                  and str(e.get("path", "")).lower().endswith(ZIP_SUFFIX)]
    return sorted(paths)
