"""Two nodes for real on one machine: two `accelerate launch --num_machines 2 --machine_rank {0,1}`
launches (CPU, gloo) stream the same shards from a loopback HTTP store; both are killed mid-epoch,
resumed exactly on two nodes, and resumed elastically on one node (world size 2 -> 1).

What is proven, from each rank's sample log (`train.log_samples`) against the epoch plan:
- both ranks train the same number of batches, on disjoint samples;
- before the kill, each rank trained exactly its planned batches;
- the two-node resume trains exactly the planned batches from the checkpoint on, and with what was
  trained before the checkpoint every train sample is seen once;
- the one-node resume from the same checkpoint neither repeats nor skips a sample.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from packer.pack import pack_dataset
from tools.loopback_store import LoopbackStore
from trainer.data import StreamingLoader
from trainer.train_config import load_train_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ACCELERATE = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
"""`accelerate` as a module: the console script is not in every venv (e.g. one that reuses another's packages)."""
TIMEOUT = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(out: Path, name: str, source: str, resume_from: Path | None = None) -> dict:
    over = {
        "paths": {"out_folder": str(out), "out_model_name": name},
        "hyperparams": {"num_epochs": 1, "batch_size": 1, "learning_rate": 0.001, "seed": 7},
        "hardware": {"accelerator": "cpu", "num_workers": 0},
        "data": {"source": source, "decode_threads": 1, "shuffle_window": 4},
        "saving": {"enable_progress_bar": False},
        "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}},
        "models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}},
        "train": {"log_samples": True, "tensorboard": False, "report": False, "checkpoint_every_n_steps": 1,
                  "limit_val_batches": 1},
    }
    if resume_from is not None:  # resumed runs go to the end of the epoch: no mid-epoch checkpoints
        over["tasks"] = {"train_tasks": {"resume_training_from_ckpt": True}}
        over["paths"]["ckpt_model_path"] = str(resume_from)
        over["train"]["checkpoint_every_n_steps"] = None
        over["saving"]["ckpt_save_also_last"] = False
    return over


def config_files(tmp: Path, over: dict) -> list[str]:
    path = tmp / f"{over['paths']['out_model_name']}.yaml"
    path.write_text(yaml.safe_dump(over))
    return [str(REPO / "configs" / "flair-hub"), str(path)]


def launch(configs: list[str], machines: int, machine_rank: int, processes: int, port: int, log: Path) -> subprocess.Popen:
    """One node: `accelerate launch` as a user types it on each machine of a cluster."""
    cmd = [*ACCELERATE, "launch", "--num_machines", str(machines), "--machine_rank", str(machine_rank),
           "--num_processes", str(processes), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        cmd.append("--multi_gpu")  # DDP; on CPU (ACCELERATE_USE_CPU) that is gloo
    cmd += [str(REPO / "trainer" / "train.py"), "--config", *configs]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=REPO)


def wait_all(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    for p, log in zip(procs, logs):
        try:
            rc = p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            kill(procs)
            raise AssertionError(f"timed out; {log}:\n{log.read_text()[-3000:]}") from None
        assert rc == 0, f"{log}:\n{log.read_text()[-4000:]}"


def kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL a whole launch, a node dying: accelerate, torchrun's agent and the training process
    (which torchrun starts in a session of its own, so it is found by parentage, not by group)."""
    import psutil

    victims = []
    for p in procs:
        try:
            victims += [p.pid, *(c.pid for c in psutil.Process(p.pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(timeout=60)


def sample_log(run: Path, rank: int) -> dict[int, list[tuple[str, bool]]]:
    """batch index -> [(patch_id, valid)] from `samples/rank<r>.txt`."""
    out: dict[int, list[tuple[str, bool]]] = {}
    path = run / "samples" / f"rank{rank}.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        epoch, batch, pid, ok = line.split()
        assert epoch == "0"
        out.setdefault(int(batch), []).append((pid, ok == "1"))
    return out


def planned(configs: list[str], world: int) -> list[list[list[tuple[str, bool]]]]:
    """Per rank, per batch, the (patch_id, valid) the epoch plan gives (no sample is read)."""
    cfg = load_train_config(configs)
    plans = []
    for rank in range(world):
        ld = StreamingLoader.from_config(cfg, "train", rank=rank, world_size=world)
        plan = ld.dataset.plan()
        ids = ld.selection.patch_ids
        plans.append([[(ids[r], bool(v)) for r, v in zip(rows, valid)] for rows, valid in zip(plan.rows, plan.valid)])
    return plans


def valid_ids(batches) -> list[str]:
    return [pid for batch in batches for pid, ok in batch if ok]


def test_two_nodes_kill_resume_and_elastic_resume(make_toy_tree, tmp_path):
    tree = make_toy_tree(patches=30, domains=3, rois_per_domain=2, seed=4)
    shards = tmp_path / "shards"
    pack_dataset(tree.root, shards, shard_size=2_000_000, workers=1, progress=False)
    train_ids = sorted(tree.result.ids_of("train"))
    assert len(train_ids) >= 12, "the epoch must be long enough to be cut in the middle"

    with LoopbackStore(shards) as store:
        # ---- 1. two nodes, killed in the middle of the epoch
        run1 = tmp_path / "run1"
        cfg1 = config_files(tmp_path, overrides(tmp_path, "run1", store.url))
        plan = planned(cfg1, 2)
        n_batches = len(plan[0])
        assert len(plan[1]) == n_batches
        port = free_port()
        logs = [tmp_path / f"run1-node{r}.log" for r in (0, 1)]
        procs = [launch(cfg1, 2, r, 2, port, logs[r]) for r in (0, 1)]
        metrics = run1 / "metrics.jsonl"
        deadline = time.monotonic() + TIMEOUT
        while not (metrics.exists() and metrics.read_text().count('"kind": "step"') >= 2):
            assert all(p.poll() is None for p in procs), "a node ended early:\n" + "\n".join(
                log.read_text()[-3000:] for log in logs)
            assert time.monotonic() < deadline, "no training step within the time limit"
            time.sleep(0.2)
        store.gate.clear()  # the store stalls: the ranks stop at their next read, after a checkpoint
        while store.held == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        kill(procs)
        store.gate.set()
        ckpt = torch.load(run1 / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
        assert ckpt["world_size"] == 2
        position = ckpt["per_rank"][0]["loader"]["position"]
        assert ckpt["per_rank"][1]["loader"]["position"] == position
        done = position // 2  # batches of 1 on 2 ranks
        assert 2 <= done < n_batches, "the kill must land in the middle of the epoch"
        before = [sample_log(run1, r) for r in (0, 1)]
        for r in (0, 1):
            assert max(before[r]) < n_batches  # killed before the end of the epoch
            for i, batch in before[r].items():
                assert batch == plan[r][i], f"rank {r} batch {i} is not the planned one"
        consumed = [pid for r in (0, 1) for i in range(done) for pid, ok in before[r][i] if ok]
        assert len(consumed) == len(set(consumed)) == 2 * done

        # ---- 2. both nodes again, resumed from the checkpoint: exactly the planned rest
        run2 = tmp_path / "run2"
        cfg2 = config_files(tmp_path, overrides(tmp_path, "run2", store.url, run1 / "checkpoints" / "last.ckpt"))
        logs = [tmp_path / f"run2-node{r}.log" for r in (0, 1)]
        port2 = free_port()
        procs = [launch(cfg2, 2, r, 2, port2, logs[r]) for r in (0, 1)]
        wait_all(procs, logs)
        after = [sample_log(run2, r) for r in (0, 1)]
        assert sorted(after[0]) == sorted(after[1]) == list(range(done, n_batches))  # equal batch counts
        for r in (0, 1):
            for i, batch in after[r].items():
                assert batch == plan[r][i], f"resumed rank {r} batch {i} differs from the plan"
        rest = [valid_ids(after[r].values()) for r in (0, 1)]
        assert not set(rest[0]) & set(rest[1])  # disjoint across nodes
        assert sorted(consumed + rest[0] + rest[1]) == train_ids  # every sample once

        # ---- 3. one node, one process, from the same two-node checkpoint (elastic: 2 -> 1)
        run3 = tmp_path / "run3"
        cfg3 = config_files(tmp_path, overrides(tmp_path, "run3", store.url, run1 / "checkpoints" / "last.ckpt"))
        log = tmp_path / "run3.log"
        wait_all([launch(cfg3, 1, 0, 1, free_port(), log)], [log])
        assert "resuming on 1" in log.read_text()
        single = sample_log(run3, 0)
        rest1 = valid_ids(single.values())
        assert len(rest1) == len(set(rest1))
        assert sorted(consumed + rest1) == train_ids  # neither repeated nor skipped
        assert not {pid for b in single.values() for pid, ok in b if not ok}  # 1 rank: no padding needed
        print(f"two nodes: {len(train_ids)} train samples, {n_batches} batches of 1 per rank; killed after the "
              f"checkpoint at batch {done} (rank 0 logged {len(before[0])}, rank 1 {len(before[1])}); two-node "
              f"resume: {len(after[0])} + {len(after[1])} batches, {len(rest[0]) + len(rest[1])} samples; "
              f"one-node resume: {len(single)} batches, {len(rest1)} samples; store served {store.requests} "
              f"requests, {store.bytes_sent / 1e6:.1f} MB")
