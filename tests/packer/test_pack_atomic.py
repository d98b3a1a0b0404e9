"""Write-then-rename: a failed write leaves the old file and no temporary behind."""

from pathlib import Path

import pytest

from packer.atomic import atomic_path, write_text_atomic


def test_success_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "manifest.json"
    write_text_atomic(target, "old")
    with atomic_path(target, durable=True) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".partial")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]


def test_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "index.parquet"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.parquet"]


def test_keep_suffix_for_format_by_extension(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "layer.gpkg", keep_suffix=True) as tmp:
        assert tmp.suffix == ".gpkg"
        tmp.write_bytes(b"x")
    assert (tmp_path / "layer.gpkg").read_bytes() == b"x"
