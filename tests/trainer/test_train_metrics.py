"""Confusion matrix and metrics against hand computations (reference conventions)."""

import numpy as np
import pytest
import torch

from trainer.metrics import ConfusionMatrix, compute_metrics, task_class_weights


def test_confusion_matrix_counts_rows_targets_cols_preds_and_skips_out_of_range():
    cm = ConfusionMatrix(3)
    targets = torch.tensor([[0, 0, 1], [2, 255, 1]])
    preds = torch.tensor([[0, 1, 1], [0, 2, 1]])
    cm.update(preds, targets)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(cm.numpy(), expected)
    cm.update(np.array([2]), np.array([2]))
    assert cm.numpy()[2, 2] == 1 and cm.total == 6


def test_confusion_matrix_rejects_bad_shapes_and_predictions():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([5]), torch.tensor([0]))


def test_compute_metrics_drops_zero_weight_classes_like_the_reference():
    # classes 0,1 evaluated; class 2 has weight 0 and is removed from rows and columns
    cm = np.array([[8, 2, 5], [1, 4, 0], [3, 3, 7]])
    m = compute_metrics(cm, [1, 1, 0], ["a", "b", "c"])
    # sub-matrix [[8,2],[1,4]]: IoU_a = 8/(10+9-8) = 8/11, IoU_b = 4/(5+6-4) = 4/7
    assert m["per_class"][0]["iou"] == pytest.approx(8 / 11)
    assert m["per_class"][1]["iou"] == pytest.approx(4 / 7)
    assert m["miou"] == pytest.approx((8 / 11 + 4 / 7) / 2)
    assert m["oa"] == pytest.approx(12 / 15)
    assert m["per_class"][2]["iou"] is None and not m["per_class"][2]["evaluated"]
    assert m["evaluated"] == [0, 1] and m["n_pixels"] == 15
    # support-weighted IoU over the full matrix (the reference's Lightning val_miou)
    full_iou = [8 / (15 + 12 - 8), 4 / (5 + 9 - 4), 7 / (13 + 12 - 7)]
    assert m["wiou"] == pytest.approx(sum(i * s for i, s in zip(full_iou, [15, 5, 13])) / 33)
    p_a, r_a = 8 / 9, 8 / 10
    assert m["per_class"][0]["f1"] == pytest.approx(2 * p_a * r_a / (p_a + r_a))


def test_absent_class_counts_as_zero_iou_and_empty_matrix_is_zero():
    m = compute_metrics(np.array([[5, 0], [0, 0]]))
    assert m["per_class"][1]["iou"] == 0.0 and m["miou"] == pytest.approx(0.5)
    assert compute_metrics(np.zeros((2, 2)))["oa"] == 0.0


def test_cosia_weights_give_15_evaluated_classes():
    cfg = {"labels_configs": {"AERIAL_LABEL-COSIA": {
        "value_name": {i: str(i) for i in range(19)},
        "value_weights": {"default": 1, "default_exceptions": {15: 0, 16: 0, 17: 0, 18: 0},
                          "per_modality_exceptions": {"AERIAL_RGBI": {3: 0.5}, "SENTINEL2_TS": None}}}}}
    w = task_class_weights(cfg, "AERIAL_LABEL-COSIA")
    assert sum(x != 0 for x in w) == 15
    assert task_class_weights(cfg, "AERIAL_LABEL-COSIA", "AERIAL_RGBI")[3] == 0.5
    assert task_class_weights(cfg, "AERIAL_LABEL-COSIA", "SENTINEL2_TS") == w
    m = compute_metrics(np.eye(19, dtype=np.int64) * 3, w)
    assert len(m["evaluated"]) == 15 and m["miou"] == 1.0
