"""Which parameters never receive a gradient: asked of the model itself, for DDP.

DDP has to be told (`find_unused_parameters=True`) when some parameters get no gradient in a
step, or the second step fails with "Expected to have finished reduction in the prior
iteration". Which parameters sit out depends on how the model is wired: the U-TAE's `out_conv`
when no auxiliary head reads its logits, the fusion's first 1x1 convolutions when an FPN decoder
reads only the deeper stages, a series-only model's task head with one task, ... A hand-kept list
of such cases goes stale with every new decoder or option (the demo config crashed at step 2).

So the model is asked: one forward pass on a one-sample synthetic batch (eval mode, so no
BatchNorm statistic moves and no dropout is drawn), the training loss on it, and a walk of the
autograd graph from that loss down to the parameters it reaches. No backward runs and no
gradient is written. Modality dropout is the one random case (a dropped branch sits a step
out): with it on and several branches, the search is needed whatever the walk finds.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from packer.schema import MODALITIES
from trainer import reference_semantics
from trainer.losses import CompositeLoss
from trainer.model.synthetic import synthetic_batch


def parameters_reached(root: torch.Tensor) -> set[int]:
    """`id`s of the leaf tensors (parameters) that a backward from `root` would give a gradient."""
    seen: set[Any] = set()
    stack = [root.grad_fn]
    reached: set[int] = set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)  # AccumulateGrad: the end of a path, at a parameter
        if leaf is not None:
            reached.add(id(leaf))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return reached


def parameters_without_gradient(model: torch.nn.Module, cfg: Mapping[str, Any],
                                device: torch.device | str | None = None) -> list[str]:
    """Names of the trainable parameters that the training loss never reaches (see module doc)."""
    spec = model.spec
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch = synthetic_batch(spec, batch_size=1, lengths=[2] if spec.multi else None)
    inputs = {k: v.to(device) for k, v in batch.inputs.items()}
    dates = {k: v.to(device) for k, v in batch.dates.items()}
    masks = {k: v.to(device) for k, v in batch.pad_masks.items()}
    labels = {t: torch.zeros(1, MODALITIES[t].size_px, MODALITIES[t].size_px, dtype=torch.long, device=device)
              for t in spec.tasks}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(inputs, dates, masks, modality_dropout=False)
            # Under train.reference_semantics the auxiliary heads run but feed no loss: the walk sees that.
            loss_fn = CompositeLoss(cfg, reference=reference_semantics.enabled(cfg)).to(device)
            total = loss_fn(out.tasks, out.aux, labels, check_finite=False).total
            reached = parameters_reached(total)
    finally:
        model.train(was_training)
    return [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in reached]


def needs_unused_parameter_search(model: torch.nn.Module, cfg: Mapping[str, Any],
                                  device: torch.device | str | None = None) -> tuple[bool, list[str]]:
    """(whether DDP must search for unused parameters, the parameters that never get a gradient)."""
    unused = parameters_without_gradient(model, cfg, device)
    spec = model.spec
    if reference_semantics.enabled(cfg):  # the reference drops every branch with p = 1/2 once any value is > 0
        dropout = len(spec.inputs) > 1 and reference_semantics.dropout_on(cfg)
    else:
        dropout = len(spec.inputs) > 1 and any(spec.modality_dropout.get(m, 0) > 0 for m in spec.inputs)
    return bool(unused) or dropout, unused
