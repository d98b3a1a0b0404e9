"""Composite loss and class-weight semantics checked against hand computations."""

import math

import pytest
import torch

from trainer.losses import CompositeLoss, NonFiniteLossError, weighted_cross_entropy

COSIA, LPIS = "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"


def _cfg(aux=(), aux_weight=1.5, task_weights=(1.0, 2.0)):
    inputs = {"AERIAL_RGBI": True, "SENTINEL2_TS": True, "DEM_ELEV": False}
    return {
        "labels": [COSIA, LPIS],
        "modalities": {"inputs": inputs, "aux_loss": {m: (m in aux) for m in inputs}, "aux_loss_weight": aux_weight},
        "labels_configs": {
            COSIA: {"task_weight": task_weights[0], "value_name": {0: "a", 1: "b", 2: "c"},
                    "value_weights": {"default": 1, "default_exceptions": {2: 0},
                                      "per_modality_exceptions": {"SENTINEL2_TS": {0: 0.25}}}},
            LPIS: {"task_weight": task_weights[1], "value_name": {0: "x", 1: "y"},
                   "value_weights": {"default": 2, "default_exceptions": None}},
        },
    }


def _hand_ce(logits, targets, weights):
    """sum_i w[y_i] * -log softmax(logits_i)[y_i] / sum_i w[y_i], pixel by pixel in Python."""
    num = den = 0.0
    B, C, H, W = logits.shape
    for b in range(B):
        for h in range(H):
            for w in range(W):
                z = [float(logits[b, c, h, w]) for c in range(C)]
                y = int(targets[b, h, w])
                lse = math.log(sum(math.exp(v) for v in z))
                num += weights[y] * (lse - z[y])
                den += weights[y]
    return num / den


@pytest.fixture
def batch_and_logits():
    g = torch.Generator().manual_seed(0)
    batch = {COSIA: torch.randint(0, 3, (2, 3, 3), generator=g, dtype=torch.uint8),
             LPIS: torch.randint(0, 2, (2, 3, 3), generator=g, dtype=torch.uint8)}
    logits = {COSIA: torch.randn(2, 3, 3, 3, generator=g), LPIS: torch.randn(2, 2, 3, 3, generator=g)}
    aux = {t: {m: torch.randn_like(logits[t]) for m in ("AERIAL_RGBI", "SENTINEL2_TS")} for t in (COSIA, LPIS)}
    return batch, logits, aux


def test_main_losses_use_default_and_exceptions_and_task_weights(batch_and_logits):
    batch, logits, _ = batch_and_logits
    terms = CompositeLoss(_cfg())(logits, {}, batch)
    ce_c = _hand_ce(logits[COSIA], batch[COSIA], [1, 1, 0])
    ce_l = _hand_ce(logits[LPIS], batch[LPIS], [2, 2])
    assert float(terms.main[COSIA]) == pytest.approx(ce_c, rel=1e-5)
    assert float(terms.main[LPIS]) == pytest.approx(ce_l, rel=1e-5)
    assert float(terms.total) == pytest.approx(1.0 * ce_c + 2.0 * ce_l, rel=1e-5)
    assert terms.aux == {}


def test_aux_losses_mean_of_weighted_heads_with_per_modality_exceptions(batch_and_logits):
    batch, logits, aux = batch_and_logits
    cfg = _cfg(aux=("AERIAL_RGBI", "SENTINEL2_TS", "DEM_ELEV"), aux_weight={"AERIAL_RGBI": 1.5, "SENTINEL2_TS": 0.5})
    loss = CompositeLoss(cfg)
    assert loss.aux_mods == ["AERIAL_RGBI", "SENTINEL2_TS"]  # DEM_ELEV is not an active input
    terms = loss(logits, aux, batch)
    ce_c = _hand_ce(logits[COSIA], batch[COSIA], [1, 1, 0])
    aux_c = (1.5 * _hand_ce(aux[COSIA]["AERIAL_RGBI"], batch[COSIA], [1, 1, 0])
             + 0.5 * _hand_ce(aux[COSIA]["SENTINEL2_TS"], batch[COSIA], [0.25, 1, 0])) / 2
    ce_l = _hand_ce(logits[LPIS], batch[LPIS], [2, 2])
    aux_l = (1.5 * _hand_ce(aux[LPIS]["AERIAL_RGBI"], batch[LPIS], [2, 2])
             + 0.5 * _hand_ce(aux[LPIS]["SENTINEL2_TS"], batch[LPIS], [2, 2])) / 2
    assert float(terms.aux[COSIA]) == pytest.approx(aux_c, rel=1e-5)
    assert float(terms.total) == pytest.approx((ce_c + aux_c) + 2.0 * (ce_l + aux_l), rel=1e-5)


def test_scalar_aux_weight_applies_to_every_head(batch_and_logits):
    batch, logits, aux = batch_and_logits
    terms = CompositeLoss(_cfg(aux=("AERIAL_RGBI",), aux_weight=1.5))(logits, aux, batch)
    expected = 1.5 * _hand_ce(aux[LPIS]["AERIAL_RGBI"], batch[LPIS], [2, 2])
    assert float(terms.aux[LPIS]) == pytest.approx(expected, rel=1e-5)


def test_missing_aux_logits_and_missing_task_are_named(batch_and_logits):
    batch, logits, _ = batch_and_logits
    with pytest.raises(KeyError, match="AERIAL_RGBI.*AERIAL_LABEL-COSIA"):
        CompositeLoss(_cfg(aux=("AERIAL_RGBI",)))(logits, {}, batch)
    with pytest.raises(KeyError, match=LPIS):
        CompositeLoss(_cfg())({COSIA: logits[COSIA]}, {}, batch)


def test_all_zero_weight_batch_gives_zero_not_nan_and_keeps_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    targets = torch.full((1, 2, 2), 2)
    loss = weighted_cross_entropy(logits, targets, torch.tensor([1.0, 1.0, 0.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0
    # matches torch's own weighted mean otherwise
    t = torch.tensor([[[0, 2], [1, 1]]])
    w = torch.tensor([1.0, 3.0, 0.0])
    ref = torch.nn.functional.cross_entropy(logits, t, weight=w)
    assert weighted_cross_entropy(logits, t, w).item() == pytest.approx(ref.item(), rel=1e-6)


def test_one_hot_targets_are_accepted(batch_and_logits):
    batch, logits, _ = batch_and_logits
    onehot = dict(batch)
    onehot[COSIA] = torch.nn.functional.one_hot(batch[COSIA].long(), 3).permute(0, 3, 1, 2)
    onehot[LPIS] = torch.nn.functional.one_hot(batch[LPIS].long(), 2).permute(0, 3, 1, 2)
    a = CompositeLoss(_cfg())(logits, {}, batch).total
    b = CompositeLoss(_cfg())(logits, {}, onehot).total
    assert float(a) == pytest.approx(float(b))


def test_nan_loss_raises_a_clear_error(batch_and_logits):
    batch, logits, _ = batch_and_logits
    bad = dict(logits)
    bad[COSIA] = torch.full_like(logits[COSIA], float("nan"))
    with pytest.raises(NonFiniteLossError, match="main loss of AERIAL_LABEL-COSIA"):
        CompositeLoss(_cfg())(bad, {}, batch)
