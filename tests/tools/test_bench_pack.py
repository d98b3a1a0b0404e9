"""Smoke test of the packing benchmark's building blocks (timings themselves are never asserted)."""

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
