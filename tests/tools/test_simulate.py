"""`flair-simulate`: the workload is what the loader really reads, the model's bounds hold, the
command reports, the calibration probes and the validation run end to end."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tools.simulate import cli
from tools.simulate.calibrate import Calibration, probe_loader, speed_probe
from tools.simulate.model import Station, mva, predict
from tools.simulate.storage import PRESETS, Storage
from tools.simulate.workload import Topology, build
from tools.synth_index import generate
from trainer.data.catalog import Catalog
from trainer.data.reader import SampleReader
from packer.storage.read import LocalSource, Source, open_source

NEEDED = ("AERIAL_RGBI", "SENTINEL2_TS", "SENTINEL2_MSK-SC", "AERIAL_LABEL-COSIA")


def fake_calibration(**kw) -> Calibration:
    base = dict(host="test", cores=8, config="test", needed=list(NEEDED), batch_size=5, threads=4,
                decoded_bytes=2e6, producer_fixed_s=0.001, producer_per_byte_s=2e-9, worker_extra_s=0.004,
                main_per_sample_s=0.002, worker_start_cpu_s=0.2, thread_speedup=1.5, request_cpu_s=0.001,
                byte_cpu_s=1e-9, server_request_cpu_s=0.0, server_byte_cpu_s=0.0,
                unit_cpu_s=0.005, rss_main_mb=600.0, rss_worker_mb=400.0, process_cores=1.5, pss_worker_mb=150.0)
    return Calibration(**{**base, **kw})


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "index"
    generate(out, seed=2, target_shards=16, split_sizes={"train": 800, "valid": 100, "test": 200}, n_rois=24)
    return out


class Counting:
    """Counts the ranged requests and bytes a source serves (size checks are not ranged reads)."""

    requests = 0
    bytes = 0

    def _read_range(self, rel: str, start: int, length: int) -> bytes:
        self.requests += 1
        self.bytes += length
        return super()._read_range(rel, start, length)


class CountingLocal(Counting, LocalSource):
    pass


class CountingRemote(Counting, Source):
    """The local folder read the way a remote store is."""

    def _size(self, rel: str) -> int:
        return os.stat(os.path.join(self.base, rel)).st_size

    def _read_range(self, rel: str, start: int, length: int) -> bytes:
        self.requests += 1
        self.bytes += length
        with open(os.path.join(self.base, rel), "rb") as f:
            f.seek(start)
            return f.read(length)


@pytest.mark.parametrize("remote", [False, True])
def test_requests_and_bytes_are_what_the_reader_fetches(toy_shards, remote):
    src = (CountingRemote if remote else CountingLocal)(str(toy_shards.out))
    catalog = Catalog(src)
    sel = catalog.select(None, NEEDED)
    topo = Topology(nodes=1, gpus_per_node=1, workers=0, threads=1, batch_size=1)
    work = build(catalog, sel, NEEDED, topo, remote=remote)
    reader = SampleReader(src, sel, NEEDED)
    for row in range(len(sel)):
        before = (src.requests, src.bytes)
        reader.read_members(row)
        assert (src.requests - before[0], src.bytes - before[1]) == (work.requests[row], work.fetched[row])
    assert work.decoded.min() > 0


def test_ranks_and_nodes_add_up_to_the_plan(synth):
    catalog = Catalog(open_source(str(synth)))
    sel = catalog.select("train", NEEDED)
    topo = Topology(nodes=2, gpus_per_node=3, workers=2, threads=2, batch_size=4)
    work = build(catalog, sel, NEEDED, topo, remote=True, seed=5)
    steps = -(-len(sel) // (topo.world * topo.batch_size))
    assert work.batches_per_rank == steps
    assert work.rank_samples.tolist() == [steps * 4] * topo.world  # every rank the same (padding included)
    assert work.rank_bytes.sum() >= work.fetched.sum()  # every sample once, plus the padding repeats
    assert work.node_bytes(topo).sum() == pytest.approx(work.rank_bytes.sum())
    assert (work.rank_checks >= 1).all()  # each loader process checks each shard it reads
    verified = build(catalog, sel, NEEDED, topo, remote=True, seed=5, verify=True)
    assert verified.rank_verify_bytes.sum() > 10 * work.rank_bytes.sum() / len(sel)


def test_mva_respects_the_bounds():
    for n in (1, 2, 5, 40):
        stations = [Station("delay", 0.05, servers=0), Station("a", 0.01), Station("b", 0.02, servers=4)]
        x = mva(stations, n)
        assert x <= n / 0.08 + 1e-9 and x <= 1 / 0.01 + 1e-9
        assert all(0 <= s.utilization <= 1 + 1e-9 for s in stations)
    assert mva([Station("a", 0.01)], 1000) == pytest.approx(100, rel=1e-3)  # saturates at 1/D
    assert mva([Station("slow", 0.01, servers=0.5)], 1000) == pytest.approx(50, rel=1e-3)  # half a server


def test_what_binds_follows_the_constraints(synth):
    catalog = Catalog(open_source(str(synth)))
    sel = catalog.select("train", NEEDED)
    topo = Topology(nodes=2, gpus_per_node=4, workers=4, threads=4, batch_size=5)
    work = build(catalog, sel, NEEDED, topo, remote=True)
    cal = fake_calibration()

    def run(store: Storage, step: float = 0.0, cores: float = 64):
        return predict(work, topo, store, cal, step_time_s=step, cores_per_node=cores)

    s3 = PRESETS["s3"]
    assert run(s3.with_overrides(per_node=5e6)).binds == "storage bandwidth"
    assert run(s3.with_overrides(max_rps=10.0)).binds == "store request rate"
    assert run(s3, cores=0.5).binds == "node cores"
    slow_model = run(s3, step=10.0)
    assert slow_model.binds == "model" and slow_model.data_wait_share == 0.0
    starved = run(s3.with_overrides(per_node=5e6), step=0.01)
    assert 0.5 < starved.data_wait_share < 1.0
    assert starved.requests_per_s == pytest.approx(starved.samples_per_s_job * work.mean_requests)
    far = run(s3.with_overrides(latency_s=2.0, per_connection=None))
    assert far.binds == "store latency" and far.first_batch_s > 2.0
    assert run(PRESETS["local"]).memory_rank_mb > cal.rss_main_mb


def test_the_command_reports_and_writes_json(synth, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    fake_calibration().save(cal)
    out = tmp_path / "sim.json"
    rc = cli.main(["--data", str(synth), "--nodes", "2", "--gpus-per-node", "2", "--workers", "2", "--storage", "hub",
                   "--step-time", "0.5", "--calibration", str(cal), "--json", str(out), "--cores-per-node", "32"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "binds" in text and "requests/s against the store" in text and "time to first batch" in text
    figures = json.loads(out.read_text())
    assert figures["binds"] == "store request rate"  # the Hub's resolver rate limit
    assert figures["requests_per_s"] == pytest.approx(PRESETS["hub"].max_rps, rel=1e-6)
    assert cli.main(["--data", str(tmp_path / "nothing"), "--calibration", str(cal)]) == 2
    assert "flair-simulate: error:" in capsys.readouterr().err


def test_step_time_from_bench_train_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([{"setting": "demo", "baseline": {"steps_per_s": 4.0}},
                                {"setting": "LC-ALL", "baseline": {"steps_per_s": 2.0}}]))
    assert cli.step_time_from(path, "LC-ALL") == 0.5
    assert cli.step_time_from(path, None) == 0.25


def test_calibration_round_trips(tmp_path):
    cal = fake_calibration()
    cal.save(tmp_path / "c.json")
    assert asdict(Calibration.load(tmp_path / "c.json")) == asdict(cal)


def test_probes_measure_the_loader_in_the_tree(toy_shards):
    from tools.simulate.calibrate import load_config

    cfg = load_config([Path(cli.REPO) / "configs" / "seed" / "LC-ALL.yaml"], toy_shards.out, 2)
    got = probe_loader(cfg, workers=0, threads=1, patch_ids=None)
    assert got["samples"] == 12 and got["cpu_s"] > 0 and got["wall_s"] > 0
    speed = speed_probe(toy_shards.out, 1, 0.2)
    assert speed["units_per_s"] > 0 and speed["cpu_per_unit_s"] > 0


@pytest.mark.slow
def test_validation_runs_one_setting_end_to_end(toy_shards, tmp_path, capsys):
    from tools import validate_simulator

    cal = tmp_path / "cal.json"
    fake_calibration(needed=["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS",
                             "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS", "SENTINEL2_MSK-SC", "AERIAL_LABEL-COSIA"],
                     cores=os.cpu_count() or 1).save(cal)
    validate_simulator.main(["--work", str(tmp_path), "--shards", str(toy_shards.out), "--calibration", str(cal),
                             "--only", "local-1r-0w", "--epochs", "2"])
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("| local | 1 | 0 |"))
    measured, predicted = (float(c) for c in row.strip("|").split("|")[3:5])
    assert measured > 0 and predicted > 0 and "worst error" in out
    assert np.isfinite(measured)
