"""The quantization summary compares weights with weights, and shows the .tflite on its own."""

import numpy as np
import pytest

from mcu_ids.pipeline import format_quantization, int8_weight_bytes
from mcu_ids.quantize.ptq import convert_keras_int8

N_FEATURES = 12
HIDDEN = 8
N_CLASSES = 3


@pytest.fixture(scope="module")
def dense_tflite() -> bytes:
    """Two dense layers converted to full int8 by the TensorFlow converter."""
    import keras

    # Zero biases (Keras' default start) are dropped by the converter; these are kept.
    bias = keras.initializers.RandomNormal(seed=1)
    inputs = keras.Input((N_FEATURES,), batch_size=1)
    hidden = keras.layers.Dense(HIDDEN, activation="relu", bias_initializer=bias)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(N_CLASSES, bias_initializer=bias)(hidden))
    calibration = np.random.default_rng(3).normal(size=(32, N_FEATURES)).astype(np.float32)
    return convert_keras_int8(model, calibration)


def test_int8_weights_are_one_byte_per_weight_and_four_per_bias(dense_tflite):
    kernels = N_FEATURES * HIDDEN + HIDDEN * N_CLASSES
    biases = HIDDEN + N_CLASSES
    assert int8_weight_bytes(dense_tflite) == kernels + 4 * biases
    assert int8_weight_bytes(dense_tflite) < len(dense_tflite)


def _summary(**extra) -> dict:
    metrics = {
        "accuracy": 0.9,
        "macro_f1": 0.8,
        "weighted_f1": 0.85,
        "macro_precision": 0.8,
        "macro_recall": 0.8,
    }
    return {
        "float": metrics,
        "int8": metrics,
        "float32_weight_bytes": 4000,
        "tflite_bytes": 5200,
        "calibration_rows": 100,
        "prediction_agreement": 1.0,
        **extra,
    }


def test_summary_rows_compare_like_with_like():
    text = format_quantization(_summary(int8_weight_bytes=1300))
    assert "| weights and biases (bytes) | 4000 | 1300 | 0.33x |" in text
    assert "| .tflite file (bytes) | - | 5200 | - |" in text
    # A summary written before int8 weight bytes were recorded still shows the file size.
    older = format_quantization(_summary())
    assert "weights and biases" not in older and "| 5200 |" in older
