"""Smoke test of `tools/bench_index.py`: it runs end to end and prints its table (no timing asserted)."""

from __future__ import annotations

import subprocess

import pytest

from tools import bench_index

pytestmark = pytest.mark.slow


def test_bench_index_prints_the_table(tmp_path, capsys):
    rc = bench_index.main(["--work", str(tmp_path), "--scale", "0.002", "--worlds", "4", "--workers", "2",
                           "--rounds", "1", "--baseline-ref", "none"])
    assert rc == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| current |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "4" and int(cells[2].replace(",", "")) == round(152_225 * 0.002)
    assert float(cells[-1]) > 0  # bytes fetched from the store were counted


def test_the_baseline_is_read_from_git(tmp_path):
    has_git = subprocess.run(["git", "-C", str(bench_index.REPO), "cat-file", "-e", "HEAD:trainer/data/catalog.py"],
                             capture_output=True).returncode == 0
    if not has_git:
        pytest.skip("not a git checkout")
    catalog, distribution = bench_index.load_baseline("HEAD", tmp_path)
    assert hasattr(catalog, "Catalog") and hasattr(distribution, "epoch_order")
