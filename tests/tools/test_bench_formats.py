"""Smoke test of the format benchmark on a tiny tree: it packs, verifies every array and prints its
tables (timings themselves are never asserted); a wrong array is caught, not timed."""

import json

import pytest

from tools import bench_formats


@pytest.mark.slow
def test_bench_formats_runs_checks_every_array_and_prints_its_tables(tmp_path, capsys):
    work = tmp_path / "bench"
    rc = bench_formats.main(["--patches", "3", "--dates", "2", "--work", str(work), "--batch-sizes", "2",
                             "--passes", "1", "--formats", "per-file,webdataset,flair-loader,flair-loader-shuffle",
                             "--modes", "0,2-ring"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| format | disk / source |" in out and "ratio to per-file" in out
    for label in ("per-file GeoTIFF", "plain webdataset", "StreamingLoader", "the opt-in --shuffle"):
        row = next(line for line in out.splitlines() if label in line)
        assert "–" not in row.split("|")[3], f"the 0-worker cell of {label} did not run: {row}"
    info = json.loads((work / "info.json").read_text())
    assert info["sizes"]["flair-pack"] > 0 and info["source_bytes"] > 0
    assert 0 < info["sizes"]["flair-pack-shuffle"] < info["sizes"]["flair-pack"]
    codec = next(line for line in out.splitlines() if line.startswith("| DEM_ELEV |"))
    assert codec.count("+") == 1 and codec.count("*") == 1  # the default and the --shuffle choice, both measured
    aerial = next(line for line in out.splitlines() if line.startswith("| AERIAL_RGBI |"))
    assert aerial.count("–") == 2  # no Blosc shuffle for one-byte items
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| modality |")).split("|")]
    assert "/" in aerial.split("|")[header.index(bench_formats.BITSHUFFLE_CANDIDATE)]  # bit-shuffle: every dtype

    ref = json.loads((work / "reference.json").read_text())
    pid = sorted(ref)[0]
    ref[pid]["DEM_ELEV"][2] = "0" * 16  # pretend the source had other bytes: the cell must refuse to time it
    (work / "reference.json").write_text(json.dumps(ref))
    with pytest.raises(AssertionError, match=f"{pid} DEM_ELEV differs from rasterio"):
        bench_formats.run_cell("flair-reader", "0", 1, 1, info)
