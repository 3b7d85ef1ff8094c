"""TFLM export against the TFLM runtime itself: op resolver, measured arena, memory budget."""

import re

import numpy as np
import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.errors import BoardError
from mcu_ids.export.tflm import (
    ARENA_ALIGNMENT,
    TFLM_ENGINE_ERRORS,
    check_fits,
    generate_op_resolver,
    measure_arena,
    memory_report,
)
from mcu_ids.quantize.ptq import convert_keras_int8
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.slow

N_FEATURES = 24
N_CLASSES = 5
CHECK_ROWS = 64
EXPECTED_OPS = {
    "RESHAPE",
    "DEPTHWISE_CONV_2D",
    "CONV_2D",
    "MAX_POOL_2D",
    "MEAN",
    "FULLY_CONNECTED",
    "SOFTMAX",
}


@pytest.fixture(scope="module")
def tflite_bytes() -> bytes:
    """The project's network shape, converted to full int8 with a representative dataset."""
    import keras

    layers = keras.layers
    inputs = keras.Input((N_FEATURES,), batch_size=1)
    x = layers.Reshape((N_FEATURES, 1))(inputs)
    x = layers.SeparableConv1D(16, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.MaxPooling1D(2)(x)
    x = layers.SeparableConv1D(32, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Softmax()(layers.Dense(N_CLASSES)(x))
    model = keras.Model(inputs, outputs)
    calibration = np.random.default_rng(7).normal(size=(64, N_FEATURES)).astype(np.float32)
    return convert_keras_int8(model, calibration)


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _distinct_ops_from_schema(data: bytes) -> set[str]:
    """The model's builtin ops read straight from the flatbuffer schema of the TFLM package."""
    schema = _runtime().schema_fb
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    codes = {max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes}
    return {names[code] for code in codes}


def _run(data: bytes, arena_bytes: int, rows: np.ndarray) -> np.ndarray:
    interpreter = _runtime().Interpreter.from_bytes(data, arena_size=arena_bytes)
    out = []
    for row in rows:
        interpreter.set_input(row[np.newaxis, :], 0)
        interpreter.invoke()
        out.append(np.array(interpreter.get_output(0)).reshape(-1))
    return np.stack(out)


def test_resolver_registers_every_op_once_and_is_sized_to_them(tflite_bytes, tmp_path):
    (header,) = generate_op_resolver(tflite_bytes, tmp_path, "abc")
    text = header.read_text()
    ops = _distinct_ops_from_schema(tflite_bytes)
    assert ops == EXPECTED_OPS
    count = int(re.search(r"#define MCU_IDS_TFLM_OP_COUNT (\d+)", text).group(1))
    assert count == len(ops)
    registered = re.findall(r'resolver\.(Add\w+)\(\) != kTfLiteOk\) \{\s+return "(\w+)";', text)
    assert sorted(name for _, name in registered) == sorted(ops)
    assert len({method for method, _ in registered}) == len(ops)
    assert "MicroMutableOpResolver<MCU_IDS_TFLM_OP_COUNT>" in text


def test_generated_arena_runs_the_model_like_an_ample_one(tflite_bytes, tmp_path):
    generate_op_resolver(tflite_bytes, tmp_path, "abc")
    text = (tmp_path / "op_resolver.h").read_text()
    arena_bytes = int(re.search(r"#define MCU_IDS_TFLM_ARENA_BYTES (\d+)u", text).group(1))
    rows = np.random.default_rng(99).integers(-128, 128, size=(CHECK_ROWS, N_FEATURES))
    rows = rows.astype(np.int8)
    ample = _run(tflite_bytes, 1 << 20, rows)
    assert np.array_equal(_run(tflite_bytes, arena_bytes, rows), ample)
    assert arena_bytes % ARENA_ALIGNMENT == 0


def test_measured_minimum_is_the_smallest_that_works(tflite_bytes):
    arena = measure_arena(tflite_bytes)
    rows = np.zeros((1, N_FEATURES), np.int8)
    _run(tflite_bytes, arena.minimum_bytes, rows)
    with pytest.raises(RuntimeError):
        _run(tflite_bytes, arena.minimum_bytes - ARENA_ALIGNMENT, rows)
    assert arena.verified
    assert arena.arena_bytes >= arena.minimum_bytes + arena.margin_bytes - ARENA_ALIGNMENT
    assert arena.to_dict()["arena_bytes"] == arena.arena_bytes


def test_memory_report_and_fit_check(tflite_bytes):
    board = get_board("nucleo-f446re")
    arena = measure_arena(tflite_bytes)
    report = memory_report(board, len(tflite_bytes), arena.arena_bytes)
    check_fits(report)
    assert report.as_dict()["ram_used_bytes"] == arena.arena_bytes
    assert "flash" in report.as_text() and board.name in report.as_text()
    over = board.ram_kib * 1024 - arena.arena_bytes + 3 * 1024
    too_big = memory_report(board, len(tflite_bytes), arena.arena_bytes, firmware_ram_bytes=over)
    with pytest.raises(BoardError, match="RAM too large by 3.0 KiB"):
        check_fits(too_big)


def test_python_error_table_mirrors_the_engine_header():
    header = (asset_dir("firmware") / "engine_tflm.h").read_text()
    codes = {int(code) for code in re.findall(r"ENGINE_TFLM_ERR_\w+ = (-\d+)", header)}
    assert codes == set(TFLM_ENGINE_ERRORS)
