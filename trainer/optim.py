"""Optimisers and learning-rate schedules with the FLAIR-HUB reference's semantics.

`hyperparams.optimizer`: `adamw` / `adam` (lr, `optim_weight_decay`, `optim_betas`) or `sgd` (lr
only, as the reference). `hyperparams.scheduler`:

- `one_cycle_lr`: OneCycleLR(max_lr=learning_rate, total_steps, pct_start=warmup_fraction,
  cycle_momentum=False, div_factor=1000), stepped after every optimizer step;
- `reduce_on_plateau`: ReduceLROnPlateau(mode=min, factor=0.5, patience=plateau_patience,
  cooldown=4, min_lr=1e-7), stepped after every validation with the validation loss;
- `cycle_then_plateau`: a linear-cosine warm-up (OneCycleLR with pct_start=1, final_div_factor=1)
  over `warmup_fraction * total_steps` steps, then the plateau schedule on the validation loss
  (the reference hard-codes patience 10 there; we use `plateau_patience`, whose default is 10);
- none (`null`): constant learning rate.

`Schedule` hides the step-vs-validation difference behind two calls and is what the training
loop and the checkpoint know about. It is deliberately not handed to `accelerator.prepare`:
Accelerate would step it once per process, but our loader already splits the data per rank, so
`total_steps` is counted in this rank's optimizer steps.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping

import torch

PLATEAU = dict(mode="min", factor=0.5, cooldown=4, min_lr=1e-7)
ONE_CYCLE = dict(cycle_momentum=False, div_factor=1000)


def build_optimizer(cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by `hyperparams.optimizer` over `params`."""
    hp = cfg["hyperparams"]
    kind = hp.get("optimizer", "adamw")
    lr = float(hp.get("learning_rate", 5e-5))
    params = [p for p in params if p.requires_grad]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if kind in ("adam", "adamw"):
        cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, weight_decay=float(hp.get("optim_weight_decay", 0.01)),
                   betas=tuple(hp.get("optim_betas", (0.9, 0.999))))
    raise ValueError(f"hyperparams.optimizer: unsupported optimizer {kind!r} (expected sgd, adam or adamw)")


class Schedule:
    """The learning-rate schedule of a run: call `after_step()` after each optimizer step and
    `after_validation(val_loss)` after each validation."""

    def __init__(self, cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        hp = cfg["hyperparams"]
        self.kind: str | None = hp.get("scheduler")
        self.total_steps = max(1, int(total_steps))
        self.steps_done = 0
        self.optimizer = optimizer
        lr = float(hp.get("learning_rate", 5e-5))
        warmup = float(hp.get("warmup_fraction", 0.0))
        patience = int(hp.get("plateau_patience", 10))
        self.step_sched: torch.optim.lr_scheduler.LRScheduler | None = None
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.warmup_steps = 0
        if self.kind == "one_cycle_lr":
            self.step_sched = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=lr, total_steps=self.total_steps, pct_start=warmup, **ONE_CYCLE)
        elif self.kind == "reduce_on_plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=patience, **PLATEAU)
        elif self.kind == "cycle_then_plateau":
            self.warmup_steps = int(warmup * self.total_steps)
            if self.warmup_steps >= 1:
                self.step_sched = torch.optim.lr_scheduler.OneCycleLR(
                    optimizer, max_lr=lr, total_steps=self.warmup_steps, pct_start=1.0,
                    final_div_factor=1, **ONE_CYCLE)
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=patience, **PLATEAU)
        elif self.kind is not None:
            raise ValueError(f"hyperparams.scheduler: unsupported scheduler {self.kind!r}")

    @property
    def in_warmup(self) -> bool:
        return self.kind == "cycle_then_plateau" and self.steps_done < self.warmup_steps

    def after_step(self) -> None:
        self.steps_done += 1
        if self.step_sched is None:
            return
        limit = self.warmup_steps if self.kind == "cycle_then_plateau" else self.total_steps
        # OneCycleLR raises past its last step; a few extra steps (e.g. a longer last epoch) keep the final LR.
        if self.steps_done < limit:
            self.step_sched.step()

    def after_validation(self, val_loss: float | None) -> None:
        if self.plateau is None or val_loss is None or self.in_warmup:
            return
        self.plateau.step(val_loss)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "steps_done": self.steps_done, "total_steps": self.total_steps,
            "step_sched": None if self.step_sched is None else self.step_sched.state_dict(),
            "plateau": None if self.plateau is None else self.plateau.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a saved schedule. When the run now has another number of optimizer steps (a
        resume on another world size, or with another epoch count), the schedule continues at the
        same fraction of the run instead of stepping past the end of the saved one."""
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint scheduler is {state.get('kind')!r} but the config says {self.kind!r}")
        self.steps_done = int(state["steps_done"])
        saved_total = int(state.get("total_steps", self.total_steps))
        if saved_total != self.total_steps:
            self.steps_done = round(self.steps_done * self.total_steps / saved_total)
            self._seek(self.steps_done)
        elif self.step_sched is not None and state.get("step_sched") is not None:
            self.step_sched.load_state_dict(state["step_sched"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])

    def _seek(self, steps: int) -> None:
        """Put the per-step schedule where `steps` calls of `after_step` would have left it."""
        if self.step_sched is None:
            return
        limit = self.warmup_steps if self.kind == "cycle_then_plateau" else self.total_steps
        n = min(steps, limit - 1)
        if n > 0:  # OneCycleLR's learning rate is a function of its step count alone
            self.step_sched.last_epoch = n - 1
            with warnings.catch_warnings():  # "step() before optimizer.step()": expected when resuming
                warnings.simplefilter("ignore", UserWarning)
                self.step_sched.step()
