"""The .tflite reader: graph contents, MAC counts and clean errors on bad files."""

import numpy as np
import pytest

from mcu_ids.errors import ModelError
from mcu_ids.export.tflite_model import (
    NATIVE_OPS,
    count_macs,
    load_tflite,
    op_names,
    quantize_multiplier,
)
from mcu_ids.quantize.ptq import convert_keras_int8

# A small instance of the product's network: 8 features, 4 then 6 filters, 3 classes.
FEATURES, FILTERS_1, FILTERS_2, CLASSES = 8, 4, 6, 3
KERNEL = 3
EXPECTED_OPS = [
    "RESHAPE",
    "DEPTHWISE_CONV_2D",
    "CONV_2D",
    "MAX_POOL_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_2D",
    "RESHAPE",
    "MEAN",
    "FULLY_CONNECTED",
    "SOFTMAX",
]


def _convert(model, samples: np.ndarray, quantize: bool = True) -> bytes:
    import tensorflow as tf

    if quantize:
        return convert_keras_int8(model, samples[:100])
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _separable_model():
    import keras

    inputs = keras.Input((FEATURES,), batch_size=1)
    x = keras.layers.Reshape((FEATURES, 1))(inputs)
    x = keras.layers.SeparableConv1D(FILTERS_1, KERNEL, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.SeparableConv1D(FILTERS_2, KERNEL, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(CLASSES)(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def _sigmoid_model():
    import keras

    inputs = keras.Input((FEATURES,), batch_size=1)
    outputs = keras.layers.Dense(CLASSES, activation="sigmoid")(inputs)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(200, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def separable_bytes(samples) -> bytes:
    return _convert(_separable_model(), samples)


def test_reads_the_graph_in_execution_order(separable_bytes):
    model = load_tflite(separable_bytes)

    assert op_names(model) == EXPECTED_OPS
    graph_input = model.tensor(model.inputs[0])
    assert graph_input.shape == (1, FEATURES)
    assert graph_input.dtype == "INT8"
    assert model.tensor(model.outputs[0]).shape == (1, CLASSES)


def test_reads_per_channel_quantization_and_options(separable_bytes):
    model = load_tflite(separable_bytes)
    ops = model.operators
    conv_filter = model.tensor(ops[5].inputs[1])
    depthwise_filter = model.tensor(ops[4].inputs[1])

    assert conv_filter.shape == (FILTERS_2, 1, 1, FILTERS_1)
    assert conv_filter.data.dtype == np.int8
    assert len(conv_filter.quantization.scales) == FILTERS_2
    assert conv_filter.quantization.quantized_dimension == 0
    assert depthwise_filter.quantization.quantized_dimension == 3
    assert ops[1].options["padding"] == "SAME"
    assert ops[2].options["activation"] == "RELU"
    assert ops[3].options["filter_w"] == 2 and ops[3].options["stride_w"] == 2
    assert ops[7].options["axes"] == (1,) and ops[7].options["keep_dims"] is False
    assert ops[9].options["beta"] == 1.0
    assert model.tensor(ops[5].inputs[2]).dtype == "INT32"


def test_counts_macs_from_shapes(separable_bytes):
    pooled = FEATURES // 2
    expected = {
        1: FEATURES * KERNEL,  # depthwise on one input channel
        2: FEATURES * FILTERS_1,  # pointwise 1 -> FILTERS_1
        4: pooled * FILTERS_1 * KERNEL,
        5: pooled * FILTERS_2 * FILTERS_1,
        8: CLASSES * FILTERS_2,
    }
    macs = count_macs(load_tflite(separable_bytes))

    assert [name for _, name, _ in macs] == EXPECTED_OPS
    assert {index: value for index, _, value in macs if value} == expected
    assert sum(value for _, _, value in macs) == 24 + 32 + 48 + 96 + 18


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.95, 0.999])
def test_truncated_file_is_a_model_error(separable_bytes, fraction):
    cut = int(len(separable_bytes) * fraction)

    with pytest.raises(ModelError):
        load_tflite(separable_bytes[:cut])


def test_garbage_is_a_model_error():
    garbage = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()

    with pytest.raises(ModelError, match="not a TFLite model"):
        load_tflite(garbage)
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_tflite(garbage[:4] + b"TFL3" + garbage[8:])
    with pytest.raises(ModelError):
        load_tflite(b"")


def test_unsupported_op_is_named_with_the_supported_ones(samples):
    data = _convert(_sigmoid_model(), samples)

    with pytest.raises(ModelError) as caught:
        load_tflite(data)
    assert "LOGISTIC" in caught.value.message
    assert all(name in caught.value.message for name in NATIVE_OPS)
    assert caught.value.hint
    # Without the native check the same model reads fine, e.g. to build a TFLM op resolver.
    assert "LOGISTIC" in op_names(load_tflite(data, native_only=False))


def test_float_model_is_refused_for_the_native_engine(samples):
    data = _convert(_separable_model(), samples, quantize=False)

    with pytest.raises(ModelError, match="float32"):
        load_tflite(data)


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.0, (0, 0)),
        (0.5, (1 << 30, 0)),
        (1.0, (1 << 30, 1)),
        (0.75, (3 << 29, 0)),
        # Rounds up into 2**31, which moves into the shift.
        (1.0 - 2.0**-40, (1 << 30, 1)),
        (2.0**-40, (0, 0)),
    ],
)
def test_quantize_multiplier(real, expected):
    assert quantize_multiplier(real) == expected
