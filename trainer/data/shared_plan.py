"""A rank's epoch plan in shared memory, so that persistent DataLoader workers get each epoch's plan
without planning it themselves.

The training process plans an epoch once (`trainer.data.distribution`: the epoch order of the
whole selection, then this rank's batches; at FLAIR-HUB's scale that is real work) and writes the
plan here before starting the epoch; every worker reads its steps from the same pages. Workers
that persist from one epoch to the next (`LoaderOptions.persistent_workers`) would otherwise keep
the plan of the epoch they were started in (their copy of the dataset object), and re-planning in
each of them would multiply the work by the number of workers (docs/scaling.md).

The memory is torch shared memory (inherited by forked workers, passed as a handle to spawned
ones) sized once for a whole epoch of this rank: one int64 row id and one flag per sample.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.data.distribution import RankPlan

_EPOCH, _POSITION, _BATCHES, _FIRST_STEP = range(4)


class SharedPlan:
    """Room for up to `max_batches` batches of `batch_size` rows, plus the epoch and position they are for."""

    def __init__(self, max_batches: int, batch_size: int) -> None:
        self.header = torch.full((4,), -1, dtype=torch.int64).share_memory_()
        self.rows = torch.zeros((max(max_batches, 1), batch_size), dtype=torch.int64).share_memory_()
        self.valid = torch.zeros((max(max_batches, 1), batch_size), dtype=torch.bool).share_memory_()

    def publish(self, epoch: int, position: int, plan: RankPlan) -> None:
        """Training process: the plan of (epoch, position), for the workers that start it next."""
        n = plan.n_batches
        if n > len(self.rows):
            raise ValueError(f"an epoch plan of {n} batches does not fit the {len(self.rows)} planned for")
        self.rows[:n] = torch.from_numpy(np.ascontiguousarray(plan.rows, dtype=np.int64))
        self.valid[:n] = torch.from_numpy(np.ascontiguousarray(plan.valid, dtype=bool))
        self.header[_BATCHES], self.header[_FIRST_STEP] = n, plan.first_step
        self.header[_EPOCH], self.header[_POSITION] = epoch, position

    def where(self) -> tuple[int, int]:
        """(epoch, position) of the plan published last ((-1, -1) before the first)."""
        return int(self.header[_EPOCH]), int(self.header[_POSITION])

    def read(self) -> RankPlan:
        """Worker: a private copy of the plan published last."""
        n = int(self.header[_BATCHES])
        if n < 0:
            raise RuntimeError("no epoch plan was published before the workers started")
        return RankPlan(rows=self.rows[:n].numpy().copy(), valid=self.valid[:n].numpy().copy(),
                        first_step=int(self.header[_FIRST_STEP]))
