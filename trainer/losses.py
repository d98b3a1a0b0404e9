"""The FLAIR-HUB composite loss: weighted cross-entropy per task plus auxiliary-head losses.

Semantics (reference `tasks/module_setup.py::FLAIRLosses` and `tasks/tasks_module.py::step`):

- main loss of a task = cross-entropy with per-class weights `value_weights.default`, overridden by
  `value_weights.default_exceptions` (CoSIA 15-18 -> 0);
- an auxiliary head exists for every modality with `modalities.aux_loss.<mod>: True` that is also an
  active input; its cross-entropy uses the task's default weights overridden again by
  `value_weights.per_modality_exceptions.<mod>`;
- aux loss of a task = mean over its auxiliary heads of `aux_loss_weight[mod] * aux_ce`
  (`aux_loss_weight` is one number for every modality, as in the reference configs, or a
  per-modality mapping);
- total = sum over tasks of `task_weight * (main + aux)`.

Two deliberate differences, both documented in docs/training.md:
- the reference looks the auxiliary logits up under the wrong key (`task in dict_logits_aux`), so
  its auxiliary losses are never added; we add them, as its configs and README describe;
- a batch whose pixels all have weight 0 gives the reference a 0/0 = NaN loss; we return 0 for
  that term instead (still attached to the graph, so DDP's gradient all-reduce stays in step).
With `reference=True` (`train.reference_semantics`) both follow the reference: the total is
`sum(task_weight * F.cross_entropy(logits, targets, weight=w))`, no auxiliary term, NaN included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from trainer.metrics import task_class_weights

__all__ = ["CompositeLoss", "LossTerms", "NonFiniteLossError", "aux_modalities", "weighted_cross_entropy"]


class NonFiniteLossError(FloatingPointError):
    """A loss came out NaN or infinite; the message names the task and the head."""


def aux_modalities(cfg: Mapping[str, Any]) -> list[str]:
    """Modalities with an auxiliary head: `aux_loss` on and the modality an active input."""
    mods = cfg["modalities"]
    inputs = mods.get("inputs") or {}
    return [m for m, on in (mods.get("aux_loss") or {}).items() if on and inputs.get(m, False)]


def _aux_weight(cfg: Mapping[str, Any], modality: str) -> float:
    w = cfg["modalities"].get("aux_loss_weight", 1.0)
    if isinstance(w, Mapping):
        return float(w.get(modality, 1.0))
    return 1.0 if w is None else float(w)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`F.cross_entropy(logits, targets, weight=weight)` (mean over the weights of the target
    pixels), but 0 instead of NaN when every target pixel has weight 0."""
    per_pixel = F.cross_entropy(logits.float(), targets, weight=weight, reduction="none")
    denom = weight[targets].sum()
    # Where every weight is 0 the numerator is 0 too; dividing by 1 then gives 0 without a sync.
    return per_pixel.sum() / torch.where(denom > 0, denom, torch.ones_like(denom))


@dataclass
class LossTerms:
    """The total loss and its parts (detached floats are read for logging)."""

    total: torch.Tensor
    main: dict[str, torch.Tensor]
    aux: dict[str, torch.Tensor]  # per task: the weighted mean over heads (absent if no head)


class CompositeLoss(torch.nn.Module):
    """Build once from the validated config; call with the model's outputs and the batch:
    `loss(out.tasks, out.aux, batch)` with `out.tasks[task]` and `out.aux[task][modality]` logits
    (the `trainer.model` forward contract) and `batch[task]` class-index targets."""

    def __init__(self, cfg: Mapping[str, Any], reference: bool = False) -> None:
        super().__init__()
        self.reference = reference
        self.tasks: list[str] = list(cfg["labels"])
        # The reference never adds its auxiliary losses (see the module docstring).
        self.aux_mods: list[str] = [] if reference else aux_modalities(cfg)
        self.task_weight = {t: float(cfg["labels_configs"][t].get("task_weight", 1.0)) for t in self.tasks}
        self.aux_weight = {m: _aux_weight(cfg, m) for m in self.aux_mods}
        # Buffers follow the module to the device and never enter the optimizer.
        for t in self.tasks:
            self.register_buffer(self._buf(t, None), torch.tensor(task_class_weights(cfg, t), dtype=torch.float32))
            for m in self.aux_mods:
                self.register_buffer(self._buf(t, m), torch.tensor(task_class_weights(cfg, t, m), dtype=torch.float32))

    @staticmethod
    def _buf(task: str, modality: str | None) -> str:
        name = f"w__{task}" if modality is None else f"w__{modality}__{task}"
        return name.replace("-", "_")

    def class_weights(self, task: str, modality: str | None = None) -> torch.Tensor:
        return getattr(self, self._buf(task, modality))

    @staticmethod
    def targets_of(batch: Mapping[str, Any], task: str) -> torch.Tensor:
        """Class-index targets `(B, H, W)` of a task (one-hot `(B, C, H, W)` labels are argmaxed)."""
        t = batch[task]
        if t.ndim == 4:
            t = t.argmax(dim=1)
        return t.long()

    def forward(
        self,
        task_logits: Mapping[str, torch.Tensor],
        aux_logits: Mapping[str, Mapping[str, torch.Tensor]] | None,
        batch: Mapping[str, Any],
        check_finite: bool = True,
    ) -> LossTerms:
        aux_logits = aux_logits or {}
        total = None
        main_terms: dict[str, torch.Tensor] = {}
        aux_terms: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task not in task_logits:
                raise KeyError(f"the model returned no logits for task {task!r} (got {sorted(task_logits)})")
            targets = self.targets_of(batch, task).to(task_logits[task].device)
            if self.reference:  # PyTorch's weighted mean, NaN when every target pixel has weight 0
                main = F.cross_entropy(task_logits[task].float(), targets, weight=self.class_weights(task))
            else:
                main = weighted_cross_entropy(task_logits[task], targets, self.class_weights(task))
            if check_finite:
                _check(main, f"main loss of {task}")
            heads = []
            for mod in self.aux_mods:
                logits = (aux_logits.get(task) or {}).get(mod)
                if logits is None:
                    raise KeyError(f"aux_loss is on for {mod} but the model returned no auxiliary logits for {task}")
                heads.append(self.aux_weight[mod] * weighted_cross_entropy(logits, targets, self.class_weights(task, mod)))
            term = main
            if heads:
                aux = torch.stack(heads).mean()
                if check_finite:
                    _check(aux, f"auxiliary loss of {task}")
                aux_terms[task] = aux
                term = main + aux
            main_terms[task] = main
            term = self.task_weight[task] * term
            total = term if total is None else total + term
        assert total is not None  # labels has at least one task (validated)
        return LossTerms(total=total, main=main_terms, aux=aux_terms)


def _check(loss: torch.Tensor, what: str) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"{what} is {value}: check the learning rate, the input normalisation and the mixed-precision "
            "setting (try train.mixed_precision: 'no' or bf16 instead of fp16)"
        )
