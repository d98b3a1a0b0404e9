"""How a `StreamingLoader` reads one split: one object instead of eighteen constructor arguments.

What is read (source, catalog, selection, sample spec) and where this process stands in the job
(rank, world size) stay separate arguments; everything else -- batching, order, decoding, error
policy, worker processes and the hand-over -- is a `LoaderOptions`, checked once when it is made,
so that a wrong value is one line naming the setting (its config key when it has one) instead of a
failure deep inside a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

from trainer.config import ON_ERROR_MODES, UNEVEN_MODES


@dataclass(frozen=True)
class LoaderOptions:
    """Every setting of a loader but what it reads; names follow the config (`data.*`, `hardware.*`).

    `persistent_workers` keeps the worker processes (and what they opened and mapped) from one
    epoch to the next, so that an epoch does not pay for starting them again; they are stopped when
    an epoch is left early, by `close()`, or with the loader.
    `transform` replaces the reference's preprocessing (raw sample -> batch sample), e.g. to read
    raw arrays. `decoded_cache` (a local directory, opt-in) keeps decoded members for later epochs
    (`trainer.data.decoded_cache`), adding none while less than `decoded_cache_min_free_gb` is free.
    """

    batch_size: int = 1
    seed: int = 0
    shuffle: bool = True
    shuffle_window: int = 512
    uneven: str = "pad"
    decode_threads: int = 4
    verify: bool = False
    check_members: bool = True
    decoded_cache: str | None = None
    decoded_cache_min_free_gb: float = 20.0
    on_error: str = "fail"
    class_balanced_task: str | None = None
    num_workers: int = 0
    prefetch_factor: int = 2
    persistent_workers: bool = True
    multiprocessing_context: str | None = None
    pin_memory: bool = False
    ring: bool = True
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_MODES:
            raise ValueError(f"data.on_error: must be one of {ON_ERROR_MODES}, got {self.on_error!r}")
        if self.uneven not in UNEVEN_MODES:
            raise ValueError(f"data.uneven: must be one of {UNEVEN_MODES}, got {self.uneven!r}")
        for name, low in (("batch_size", 1), ("num_workers", 0), ("decode_threads", 0), ("shuffle_window", 0),
                          ("prefetch_factor", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"loader option {name}: must be an integer >= {low}, got {value!r}")

    def with_(self, **changes: Any) -> "LoaderOptions":
        """A copy with some settings changed (unknown names are one error naming them)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown loader option(s): {', '.join(unknown)} "
                            f"(known: {', '.join(f.name for f in fields(self))})")
        return replace(self, **changes) if changes else self

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], training: bool, **changes: Any) -> "LoaderOptions":
        """The options a validated config gives a split: training splits shuffle (and may balance
        classes); `changes` then override any setting."""
        data = cfg["data"]
        return cls(
            batch_size=cfg["hyperparams"]["batch_size"], seed=cfg["hyperparams"]["seed"], shuffle=training,
            shuffle_window=data["shuffle_window"], uneven=data["uneven"], decode_threads=data["decode_threads"],
            verify=data["verify"], on_error=data["on_error"], decoded_cache=data["decoded_cache"],
            decoded_cache_min_free_gb=data["decoded_cache_min_free_gb"],
            class_balanced_task=cfg["labels"][0] if (data["class_balanced"] and training) else None,
            num_workers=cfg.get("hardware", {}).get("num_workers", 0),
            persistent_workers=data["persistent_workers"],
        ).with_(**changes)
