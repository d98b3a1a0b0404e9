"""Smoke test of the packing benchmark's building blocks (timings themselves are never asserted)."""

import pytest

from tools.bench_pack import FLOORS, read_floor, source_files, writer_capacity


def test_floors_and_writer_capacity_run(toy_tree, tmp_path):
    paths = source_files(toy_tree.root)
    assert len(paths) == 10 * len(toy_tree.result.patch_ids)  # every modality of every patch
    for how in FLOORS:
        wall, cpu = read_floor(paths, 1, how)
        assert wall > 0 and cpu > 0
    cap = writer_capacity(toy_tree.root, tmp_path, n_samples=3, total=7)
    assert cap["samples"] == 7 and cap["patches_s"] > 0 and cap["mb_s"] > 0
    assert not (tmp_path / "writer_only").exists()  # its shards are removed afterwards


@pytest.mark.slow
def test_zip_rows_run(toy_tree, tmp_path, capsys):
    """The zip section: read paths, local zip packs, unzip, and packs from the fake Hub (0 and 20 ms)."""
    from tools import bench_zips

    zips = bench_zips.make_zips(toy_tree.root, tmp_path)
    paths = bench_zips.read_paths(toy_tree.root, zips, rounds=1)
    assert len(paths) == 6 and all(r["cpu_ms"] > 0 for r in paths)
    gpkgs = bench_zips.read_gpkg_paths(zips, rounds=1)
    assert len(gpkgs) == 4
    packs = bench_zips.pack_rows(toy_tree.root, zips, tmp_path, rounds=1, workers=(1,), latencies_ms=(0.0, 20.0))
    kinds = {k for k, _ in packs["packs"]}
    assert kinds == {"tree", "zips deflate", "zips store", "hub 0 ms", "hub 20 ms"} and packs["unzip_s"] > 0
    hub = packs["packs"][("hub 20 ms", 1)]
    assert hub["patches"] == 12 and hub["source"]["member_requests"] == 120 and hub["source"]["bytes"] > 0
    bench_zips.print_tables(paths, gpkgs, packs)
    out = capsys.readouterr().out
    assert "| zips deflate | 1 |" in out and "| hub 20 ms | 1 |" in out and "`unzip`" in out
