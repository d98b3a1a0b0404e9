"""Partition properties of the epoch plan: disjoint, complete, equal length, deterministic, resumable."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer.data.distribution import buffer_shuffle, cut_steps, epoch_order, steps_in_epoch


def toy_index(shard_sizes):
    """(shard_of_row, position_in_shard) for shards of the given sample counts."""
    shard = np.concatenate([np.full(n, i) for i, n in enumerate(shard_sizes)]).astype(np.int64)
    pos = np.concatenate([np.arange(n) for n in shard_sizes]).astype(np.int64)
    return shard, pos


SHARDINGS = [(5,), (3, 1, 4), (2, 7, 1, 8, 2, 8, 1), (1,) * 9, (13, 4, 6, 2, 9)]


@pytest.mark.parametrize("sizes", SHARDINGS)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_ranks_disjoint_complete_equal(sizes, world, uneven):
    shard, pos = toy_index(sizes)
    n = len(shard)
    batch = 2
    order = epoch_order(shard, pos, seed=3, epoch=1, shuffle=True, shuffle_window=4)
    assert sorted(order.tolist()) == list(range(n))
    plans = [cut_steps(order, 0, r, world, batch, uneven) for r in range(world)]
    lengths = {p.n_batches for p in plans}
    assert len(lengths) == 1, "ranks must yield the same number of batches"
    assert lengths.pop() == steps_in_epoch(n, 0, world, batch, uneven)
    valid = np.concatenate([p.rows[p.valid] for p in plans])
    assert len(valid) == len(set(valid.tolist())), "a sample is seen twice in an epoch"
    if uneven == "pad":
        assert sorted(valid.tolist()) == list(range(n)), "pad mode must cover every sample"
        n_pad = sum(int((~p.valid).sum()) for p in plans)
        assert n_pad < world * batch
        # padding only ever sits in the last step
        for p in plans:
            assert p.valid[:-1].all()
    else:
        assert n - len(valid) < world * batch
        assert all(p.valid.all() for p in plans)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_workers_split_rank_steps(workers):
    shard, pos = toy_index((2, 7, 1, 8, 2))
    plan = cut_steps(epoch_order(shard, pos, 0, 0), 0, 1, 2, 3)
    steps = [list(plan.worker_steps(w, workers)) for w in range(workers)]
    flat = sorted(itertools.chain.from_iterable(steps))
    assert flat == list(range(plan.n_batches))
    # round-robin over workers gives back the rank's steps in order
    rr = [s for group in itertools.zip_longest(*steps) for s in group if s is not None]
    assert rr == list(range(plan.n_batches))


def test_order_depends_on_seed_and_epoch_only():
    shard, pos = toy_index((3, 1, 4, 1, 5, 9, 2, 6))
    a = epoch_order(shard, pos, seed=1, epoch=0)
    assert np.array_equal(a, epoch_order(shard, pos, seed=1, epoch=0))
    assert not np.array_equal(a, epoch_order(shard, pos, seed=1, epoch=1))
    assert not np.array_equal(a, epoch_order(shard, pos, seed=2, epoch=0))
    fixed = epoch_order(shard, pos, seed=1, epoch=0, shuffle=False)
    assert fixed.tolist() == list(range(len(shard)))


def test_shard_order_shuffled_and_samples_stream_through_shards():
    shard, pos = toy_index((4,) * 10)
    order = epoch_order(shard, pos, seed=5, epoch=0, shuffle=True, shuffle_window=0)
    shards_visited = [int(shard[i]) for i in order[::4]]
    assert sorted(shards_visited) == list(range(10)) and shards_visited != list(range(10))
    for k in range(10):  # without a buffer, each shard is read contiguously, in order
        block = order[4 * k : 4 * k + 4]
        assert len(set(shard[block].tolist())) == 1 and pos[block].tolist() == [0, 1, 2, 3]


def test_buffer_shuffle_is_bounded_permutation():
    rng = np.random.default_rng(0)
    src = np.arange(1000)
    out = buffer_shuffle(src, 16, rng)
    assert sorted(out.tolist()) == src.tolist()
    where = np.empty_like(out)
    where[out] = np.arange(len(out))
    # a sample leaves at the earliest 16 places before it arrives (it must be in the buffer first)
    assert (where >= src - 16).all()
    assert not np.array_equal(out, src)


@pytest.mark.parametrize("w1,w2", [(1, 1), (2, 2), (2, 3), (4, 1), (3, 2)])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_resume_with_other_world_size_neither_repeats_nor_loses(w1, w2, k):
    shard, pos = toy_index((2, 7, 1, 8, 2, 8, 1))
    n, batch = len(shard), 2
    order = epoch_order(shard, pos, seed=9, epoch=4)
    before = [cut_steps(order, 0, r, w1, batch) for r in range(w1)]
    k = min(k, before[0].n_batches)
    consumed = np.concatenate([p.rows[:k][p.valid[:k]] for p in before]) if k else np.zeros(0, dtype=int)
    position = k * w1 * batch  # what StreamingLoader.state_dict() records
    after = [cut_steps(order, position, r, w2, batch) for r in range(w2)]
    assert len({p.n_batches for p in after}) == 1
    rest = np.concatenate([p.rows[p.valid] for p in after])
    seen = np.concatenate([consumed, rest]).tolist()
    assert sorted(seen) == list(range(n))
    if w1 == w2:  # same world size: the remaining batches are exactly the uninterrupted ones
        for r in range(w1):
            assert np.array_equal(after[r].rows, before[r].rows[k:])


def test_class_balanced_order_prefers_heavy_samples():
    shard, pos = toy_index((50, 50))
    weights = np.ones(100)
    weights[7] = 50.0
    order = epoch_order(shard, pos, seed=0, epoch=0, weights=weights)
    assert len(order) == 100 and (order == 7).sum() > 10
    with pytest.raises(ValueError, match="weights"):
        epoch_order(shard, pos, 0, 0, weights=np.zeros(100))


def stepped_buffer_shuffle(order, window, rng):
    """The shuffle buffer stepped sample by sample (the loop `buffer_shuffle` computes at once)."""
    if window <= 1 or len(order) <= 1:
        return order.copy()
    out = np.empty_like(order)
    buf = list(order[:window])
    picks = rng.integers(0, 1 << 62, size=len(order))
    n = 0
    for i in range(window, len(order)):
        j = int(picks[n] % len(buf))
        out[n] = buf[j]
        buf[j] = order[i]
        n += 1
    out[n:] = np.asarray(buf, dtype=order.dtype)[rng.permutation(len(buf))]
    return out


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 1000, 5003])
@pytest.mark.parametrize("window", [0, 1, 2, 3, 16, 512, 70_000])
def test_buffer_shuffle_equals_the_stepped_buffer(n, window):
    for seed in range(3):
        src = np.random.default_rng(seed + 100).permutation(n)
        got = buffer_shuffle(src, window, np.random.default_rng(seed))
        assert np.array_equal(got, stepped_buffer_shuffle(src, window, np.random.default_rng(seed)))


@pytest.mark.parametrize("sizes", SHARDINGS + [(235,) * 40])
def test_epoch_order_is_the_lexsorted_buffered_order(sizes):
    """The plan is the one every released version computed: same seed, epoch, index -> same order."""
    shard, pos = toy_index(sizes)
    perm = np.random.default_rng(7).permutation(len(shard))  # rows in any order, as in an index
    shard, pos = shard[perm], pos[perm]
    for epoch in (0, 5):
        rng = np.random.default_rng([11, epoch, 0])
        shards = np.unique(shard)
        rank = np.empty(shards.max() + 1, dtype=np.int64)
        rank[shards[rng.permutation(len(shards))]] = np.arange(len(shards))
        expected = stepped_buffer_shuffle(np.lexsort((pos, rank[shard])), 8, np.random.default_rng([11, epoch, 1]))
        assert np.array_equal(epoch_order(shard, pos, 11, epoch, True, 8), expected)
        assert np.array_equal(epoch_order(shard, pos, 11, epoch, False, 8), np.lexsort((pos, shard)))
