"""Focal loss, class weights, metrics and quantization helpers."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from mcu_ids.model.evaluate import classification_metrics, confusion_matrix
from mcu_ids.model.focal import balanced_alpha, focal_loss_numpy, make_focal_loss
from mcu_ids.quantize.ptq import Quantization, calibration_indices

# Worked by hand: -0.25 * 0.2**2 * ln(0.8) = 0.0022314355 and -0.75 * 0.4**2 * ln(0.6) =
# 0.0612990744; their mean is 0.0317652549.
HAND_LABELS = np.array([0, 1])
HAND_PROBS = np.array([[0.8, 0.2], [0.4, 0.6]])
HAND_ALPHA = np.array([0.25, 0.75])
HAND_LOSS = 0.0317652549


def test_focal_loss_numpy_matches_hand_computation():
    assert focal_loss_numpy(HAND_LABELS, HAND_PROBS, HAND_ALPHA, 2.0) == pytest.approx(
        HAND_LOSS, abs=1e-9
    )


def test_focal_loss_keras_matches_hand_computation():
    from keras import ops

    loss = make_focal_loss(HAND_ALPHA, gamma=2.0)
    values = ops.convert_to_numpy(loss(HAND_LABELS.astype("float32"), HAND_PROBS.astype("float32")))
    assert float(np.mean(values)) == pytest.approx(HAND_LOSS, abs=1e-6)


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, 50)
    alpha = np.array([1.0, 2.0, 0.5, 1.5])
    expected = np.mean(-alpha[labels] * np.log(probs[np.arange(50), labels]))
    assert focal_loss_numpy(labels, probs, alpha, 0.0) == pytest.approx(expected, rel=1e-6)


def test_balanced_alpha_weights_rare_classes_up_and_skips_absent_ones():
    labels = np.array([0] * 90 + [1] * 10)
    alpha = balanced_alpha(labels, 3)
    assert alpha[2] == 0.0
    assert alpha[1] / alpha[0] == pytest.approx(9.0)
    assert alpha[:2].mean() == pytest.approx(1.0)


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.where(rng.random(400) < 0.7, y_true, rng.integers(0, 5, 400))
    metrics = classification_metrics(y_true, y_pred, list("abcde"))
    assert metrics["f1"]["macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["f1"]["weighted"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert metrics["precision"]["macro"] == pytest.approx(
        precision_score(y_true, y_pred, average="macro")
    )
    assert metrics["recall"]["weighted"] == pytest.approx(
        recall_score(y_true, y_pred, average="weighted")
    )
    assert metrics["accuracy"] == pytest.approx(np.mean(y_true == y_pred))


def test_macro_average_ignores_classes_absent_from_the_test_rows():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 0])
    metrics = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    per_class = {row["class"]: row for row in metrics["per_class"]}
    expected = (per_class["a"]["f1"] + per_class["b"]["f1"]) / 2
    assert metrics["f1"]["macro"] == pytest.approx(expected)


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_quantize_rounds_half_away_from_zero_and_saturates():
    quant = Quantization(scale=0.5, zero_point=-3)
    values = np.array([0.25, -0.25, 0.75, 1000.0, -1000.0])
    assert quant.quantize(values).tolist() == [-2, -4, -1, 127, -128]


def test_calibration_set_contains_every_class_even_rare_ones():
    labels = np.array([0] * 5000 + [1] * 3 + [2] * 40)
    picked = calibration_indices(labels, rows=200, seed=0)
    assert set(labels[picked]) == {0, 1, 2}
    assert np.sum(labels[picked] == 1) == 3
    assert len(np.unique(picked)) == len(picked)
