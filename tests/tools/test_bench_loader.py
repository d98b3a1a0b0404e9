"""Smoke test of the training-stream benchmark on a tiny tree: every core row runs at every batch
size asked for, next to the per-file baseline, and the ratio table comes out (timings themselves
are never asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tools import bench_loader

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_loader_runs_the_core_rows_at_every_batch_size(tmp_path):
    # As a user runs it, in a fresh interpreter: flair-toy forks its writers when torch is not
    # loaded, and a test process that already used GDAL is not a safe parent for that.
    proc = subprocess.run([sys.executable, "-m", "tools.bench_loader", "--patches", "4", "--work",
                           str(tmp_path / "bench"), "--configs", "s2", "--batch-sizes", "1,3", "--rounds", "1",
                           "--today", "", "--skip-s3"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "### config `s2`: SENTINEL2_TS + AERIAL_LABEL-COSIA" in out
    assert "| | setting | batch 1 | batch 3 |" in out
    for label in ("per-file rasterio, reference preprocessing, one-hot labels, 0 workers",
                  "per-file rasterio, reference preprocessing, one-hot labels, 2 workers",
                  "shards, local, 0 workers, 1 thread", "shards, local, 2 workers, 1 thread each"):
        row = next(line for line in out.splitlines() if f"| {label} |" in line)
        cells = [c.strip() for c in row.split("|")[3:5]]
        assert all(c != "-" and float(c) > 0 for c in cells), row
    # The opt-in --shuffle pack of the same tree (S2 is uint16): its own rows, ratio line and breakdown row.
    shuffled = next(line for line in out.splitlines() if "| shards packed with the opt-in --shuffle, local, 0 workers" in line)
    assert float(shuffled.split("|")[4]) > 0, shuffled
    assert "opt-in --shuffle pack (batch 3): best b~ / best b = " in out
    assert any(line.startswith("| --shuffle | ") for line in out.splitlines())
    # The streams up to the hand-over (normalisation left to the device), both packs, 0 and 2 workers.
    handed = [line for line in out.splitlines() if "| to the hand-over: " in line]
    assert len(handed) == 4 and all(float(line.split("|")[4]) > 0 for line in handed), handed
    assert "to the hand-over, normalisation left to the device (batch 3): best h / best b = " in out
    ratios = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(ratios) == 2
    assert out.rstrip().splitlines()[-1].startswith("ratio: ")


@pytest.mark.parametrize("argv, what", [(["--configs", "everything"], "--configs"),
                                        (["--batch-sizes", "0"], "--batch-sizes")])
def test_bench_loader_refuses_bad_arguments(tmp_path, capsys, argv, what):
    with pytest.raises(SystemExit) as e:
        bench_loader.main(["--work", str(tmp_path / "unused")] + argv)
    assert e.value.code == 2
    assert what in capsys.readouterr().err
    assert not (tmp_path / "unused").exists()
