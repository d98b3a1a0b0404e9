"""The performance model: one node's loader as a closed queueing network, solved by mean-value analysis.

Every decode thread of every loader process on a node is a customer that loops over samples:

    store latency (a delay: requests x first-byte latency, + bytes / per-connection bandwidth)
      -> the node's link (one queue: bytes / the node's share of the store and NIC bandwidth)
      -> the loader processes (one server each, Seidmann's multi-server approximation: CPU
         seconds per sample to read, decode, preprocess, collate; a process runs its threads'
         Python parts one at a time, so it does at most `process_cores` cores' worth of work)
      -> with workers, the rank's training process (one server per rank: receiving the batch)

There are `ranks_per_node x max(1, workers) x decode_threads` customers. Exact MVA over them gives
the node's samples/s; bounds outside the network then apply: all processes together cannot use
more than the node's cores, the store accepts at most `max_rps` requests/s from the whole job, and
the model takes `step_time` per batch. On a shared host a process gets `share` of a core (1 on a
dedicated node), which the validation measures.

What binds is the resource whose bound is lowest (or, inside the network, the busiest station).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tools.simulate.calibrate import Calibration
from tools.simulate.storage import Storage
from tools.simulate.workload import Topology, Workload


@dataclass
class Station:
    name: str
    demand: float  # seconds per sample
    servers: float = 1.0  # 0: a pure delay
    utilization: float = 0.0


def mva(stations: list[Station], customers: int) -> float:
    """Throughput (samples/s) of a closed network of `customers`; fills each station's utilization.

    Multi-server stations use Seidmann's approximation: a queue with demand D/c plus a delay
    D (c - 1) / c.
    """
    def split(s: Station) -> tuple[float, float]:
        """(queueing demand, delay demand) of a station; less than one server is one slower server."""
        if s.demand <= 0:
            return 0.0, 0.0
        if s.servers <= 0:
            return 0.0, s.demand
        if s.servers < 1:
            return s.demand / s.servers, 0.0
        return s.demand / s.servers, s.demand * (s.servers - 1) / s.servers

    parts = [split(s) for s in stations]
    queues = [0.0] * len(stations)
    x = 0.0
    for n in range(1, customers + 1):
        residence = [q_d * (1 + q) + d_d for (q_d, d_d), q in zip(parts, queues)]
        total = sum(residence)
        x = n / total if total > 0 else float("inf")
        queues = [x * q_d * (1 + q) for (q_d, _), q in zip(parts, queues)]
    for s, (q_d, _) in zip(stations, parts):
        s.utilization = x * q_d
    return x


@dataclass
class Prediction:
    samples_per_s_rank: float
    samples_per_s_job: float
    loader_samples_per_s_rank: float  # what the data side alone could deliver
    data_wait_share: float
    binds: str
    bounds: dict[str, float]  # per-rank samples/s each resource allows
    stations: list[Station] = field(default_factory=list)
    requests_per_s: float = 0.0  # against the store, whole job
    node_bytes_per_epoch: float = 0.0
    node_mb_per_s: float = 0.0
    first_batch_s: float = 0.0
    memory_rank_mb: float = 0.0
    epoch_s: float = 0.0
    cpu_per_sample_s: float = 0.0  # in the rank's processes (loader processes + training process)


def predict(work: Workload, topo: Topology, store: Storage, cal: Calibration, step_time_s: float = 0.0,
            cores_per_node: float | None = None, share: float = 1.0, server_on_node: bool = False,
            open_s: float = 0.0, catalog_mb: float = 0.0, prefetch_factor: int = 2) -> Prediction:
    """Per-rank and per-job figures for one epoch (see the module docstring)."""
    R, P, T, B = topo.gpus_per_node, topo.producers, topo.threads, topo.batch_size
    fetched = work.mean_fetched
    requests = work.mean_requests
    decoded = work.mean_decoded
    cores = float(cores_per_node if cores_per_node is not None else cal.cores)

    # ---- CPU seconds per sample, by process
    producer = cal.producer_cpu_s(decoded, T)
    if store.remote:
        producer += cal.request_cpu_s * requests + cal.byte_cpu_s * fetched
    if topo.workers > 0:
        producer += cal.worker_extra_s * decoded / cal.decoded_bytes
    main = cal.main_per_sample_s * decoded / cal.decoded_bytes if topo.workers > 0 else 0.0
    server = (cal.server_request_cpu_s * requests + cal.server_byte_cpu_s * fetched) if server_on_node else 0.0

    # Each loader process is a server: it runs its threads' Python parts one at a time (the
    # interpreter lock), so it does at most `process_cores` cores' worth of work, and it gets
    # `share` of a core per runnable thread (1 on a dedicated node; less on a shared host, where
    # other users' processes take their turns). A training process receiving batches from workers
    # is one more server per rank. Together they cannot use more than the node's cores.
    per_process = cal.loader_process_cores(T)
    speed = share * per_process

    # ---- the network: threads looping over samples
    per_node_bw = min(b for b in (store.per_node, (store.store_total / topo.nodes) if store.store_total else None)
                      if b is not None) if (store.per_node or store.store_total) else None
    latency = requests * store.latency_s + (fetched / store.per_connection if store.per_connection else 0.0)
    stations = [
        Station("store latency", latency, servers=0),
        Station("storage bandwidth", fetched / per_node_bw if per_node_bw else 0.0),
        Station("decode CPU", producer / speed, servers=R * P),
        Station("training process (batch hand-over)", main / share, servers=R),
        Station("store server CPU", server / share, servers=1),
    ]
    x_node = mva(stations, R * P * T)
    bounds = {"loader network": x_node / R}
    cpu = producer + main + server
    if cpu > 0:
        bounds["node cores"] = cores / cpu / R
    if store.max_rps:
        bounds["store request rate"] = store.max_rps / (requests * topo.world)
    loader = min(bounds.values())
    if step_time_s > 0:
        bounds["model"] = B / step_time_s
    rank_rate = min(bounds.values())
    for st in stations:  # utilisation at the rate the run actually goes
        st.utilization *= rank_rate * R / x_node if x_node > 0 else 0.0
    stations = [st for st in stations if st.demand > 0]
    binds = min(bounds, key=bounds.get)
    if binds == "loader network":
        binds = max(stations, key=lambda st: st.utilization).name
        if latency > 0 and max(st.utilization for st in stations) < 0.6:
            binds = "store latency"  # too few threads in flight to keep anything busy
    model_rate = B / step_time_s if step_time_s > 0 else float("inf")
    wait = max(0.0, 1.0 - loader / model_rate) if step_time_s > 0 else float("nan")  # no model: undefined

    # ---- time to the first batch: open + plan, then every loader process starts at once and
    # builds its first batch
    io = latency + fetched / (per_node_bw or float("inf"))
    first = open_s + store.latency_s  # + the shard's size check
    if topo.workers:
        first += cal.worker_start_cpu_s / share
    first += -(-B // T) * io + B * producer / speed + B * main / share

    # ---- memory: the training process, its catalog, batches in flight; the workers
    batch_mb = B * decoded / 1e6
    memory = cal.rss_main_mb + catalog_mb
    if topo.workers:  # a worker's own memory (PSS) when measured, else its resident size
        worker_mb = cal.pss_worker_mb or cal.rss_worker_mb
        memory += topo.workers * prefetch_factor * batch_mb + topo.workers * (worker_mb + 2 * batch_mb)
    else:
        memory += 2 * batch_mb

    job = rank_rate * topo.world
    samples_rank = float(work.rank_samples.mean())
    epoch = samples_rank / rank_rate + first if rank_rate > 0 else float("inf")
    node_bytes = float(work.node_bytes(topo).mean())
    return Prediction(
        samples_per_s_rank=rank_rate, samples_per_s_job=job, loader_samples_per_s_rank=loader, data_wait_share=wait,
        binds=binds, bounds=bounds, stations=stations, requests_per_s=job * requests,
        node_bytes_per_epoch=node_bytes, node_mb_per_s=rank_rate * R * fetched / 1e6, first_batch_s=first,
        memory_rank_mb=memory, epoch_s=epoch, cpu_per_sample_s=producer + main)
