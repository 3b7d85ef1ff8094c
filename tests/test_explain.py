"""Integrated gradients: unseen features get nothing; attributions add up to the output change."""

import numpy as np
import pytest

from mcu_ids.model.explain import format_explanations, integrated_gradients, top_features

N_FEATURES = 10
IGNORED = 3
# Probability units; the trapezoid rule over 128 steps on this ReLU network stays well inside.
COMPLETENESS_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(40, N_FEATURES)).astype(np.float32)


def test_a_feature_the_first_layer_ignores_gets_zero_attribution(rows):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((N_FEATURES,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
            keras.layers.Softmax(),
        ]
    )
    kernel, bias = model.layers[0].get_weights()
    kernel[IGNORED] = 0.0
    model.layers[0].set_weights([kernel, bias])
    targets = np.arange(len(rows)) % 3
    attributions, errors = integrated_gradients(model, rows, targets, steps=64)
    assert np.all(rows[:, IGNORED] != 0)
    assert np.all(attributions[:, IGNORED] == 0.0)
    assert np.abs(np.delete(attributions, IGNORED, axis=1)).sum(axis=1).min() > 0
    assert np.abs(errors).max() < COMPLETENESS_TOLERANCE


def test_the_product_network_zeroed_feature_and_completeness(rows):
    import keras

    from mcu_ids.model.network import NetworkConfig, build_network

    keras.utils.set_random_seed(2)
    model = build_network(NetworkConfig(n_features=N_FEATURES, n_classes=2, filters=(4, 8)))
    x = rows.copy()
    x[:, IGNORED] = 0.0  # the baseline value: the feature carries no difference to explain
    targets = np.zeros(len(x), np.int64)
    attributions, errors = integrated_gradients(model, x, targets)
    assert np.all(attributions[:, IGNORED] == 0.0)
    change = model(x).numpy()[:, 0] - model(np.zeros_like(x)).numpy()[:, 0]
    assert np.allclose(attributions.sum(axis=1), change, atol=COMPLETENESS_TOLERANCE)
    assert np.allclose(errors, attributions.sum(axis=1) - change, atol=1e-5)


def test_top_features_rank_by_mean_absolute_attribution():
    attributions = np.array([[0.1, -0.5, 0.0], [0.1, 0.3, 0.0]])
    top = top_features(attributions, ["a", "b", "c"], count=2)
    assert [t["feature"] for t in top] == ["b", "a"]
    assert top[0]["mean_abs"] == pytest.approx(0.4)
    assert top[0]["mean"] == pytest.approx(-0.1)
    summary = {
        "method": "m",
        "rows_explained": 2,
        "completeness_max_abs_error": 0.0,
        "per_class": {"Benign": top},
        "misclassified_rows": 0,
        "misclassified": [],
    }
    assert "| predicted Benign | 1 | b | 0.4000 | -0.1000 |" in format_explanations(summary)
