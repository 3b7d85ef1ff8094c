"""The generated native C engine gives TFLite Micro's outputs byte for byte.

Each model below has the product's architecture, is trained a few epochs on structured data so
its activations are not trivial, and is quantized with a representative set. The engine is
compiled with gcc beside a small driver (tests/c/native_driver.c) and compared with the TFLite
Micro runtime, the golden reference, on random int8 rows and on rows from the data distribution.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.render import banner_for
from mcu_ids.export.native import generate_native_engine, native_engine_summary
from mcu_ids.export.tflite_model import count_macs, load_tflite, op_names
from mcu_ids.quantize.ptq import convert_keras_int8
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).parent / "c" / "native_driver.c"
HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
ARM_FLAGS = [
    "-mcpu=cortex-m4",
    "-mthumb",
    "-mfloat-abi=hard",
    "-mfpu=fpv4-sp-d16",
    "-std=c99",
    "-Os",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-c",
]
PROFILE_DEFINE = "-DMCU_IDS_PROFILE_LAYERS"
SOURCE_HASH = "0" * 64
RANDOM_ROWS = 3000
DISTRIBUTION_ROWS = 3000
TRAIN_ROWS = 4000
EPOCHS = 4
REPRESENTATIVE_ROWS = 200
TFLM_ARENA_BYTES = 64 * 1024

# (features, classes, filters of the two separable convolutions, kernel size, pooling layer):
# the product's two shapes, and a variant with a wider kernel and average pooling.
SHAPES = [
    (39, 2, 16, 32, 3, "MaxPooling1D"),
    (45, 19, 32, 64, 3, "MaxPooling1D"),
    (45, 6, 16, 24, 5, "AveragePooling1D"),
]


def _structured_data(features: int, classes: int, rows: int, seed: int):
    """Rows around one centre per class, with features on unequal scales like flow statistics."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.5, size=(classes, features))
    labels = rng.integers(0, classes, rows)
    feature_scale = rng.uniform(0.5, 3.0, size=features)
    x = (centres[labels] + rng.normal(size=(rows, features))) * feature_scale
    return x.astype(np.float32), labels


def _train_and_convert(features, classes, filters_1, filters_2, kernel, pooling):
    import keras

    keras.utils.set_random_seed(features + classes)
    layers = [
        keras.layers.Reshape((features, 1)),
        keras.layers.SeparableConv1D(filters_1, kernel, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        getattr(keras.layers, pooling)(2),
        keras.layers.SeparableConv1D(filters_2, kernel, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(classes),
        keras.layers.Softmax(),
    ]

    def stack(inputs):
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x)

    x, y = _structured_data(features, classes, TRAIN_ROWS, seed=features * classes)
    trainer = stack(keras.Input((features,)))
    trainer.compile("adam", "sparse_categorical_crossentropy")
    trainer.fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)
    deploy = stack(keras.Input((features,), batch_size=1))

    held_out, _ = _structured_data(features, classes, DISTRIBUTION_ROWS, seed=features * classes)
    return convert_keras_int8(deploy, x[:REPRESENTATIVE_ROWS]), held_out


def _compile(sources: list[Path], include_dirs: list[Path], output: Path, extra=()) -> Path:
    includes = [f"-I{d}" for d in include_dirs]
    command = ["gcc", *HOST_FLAGS, *extra, *includes, *map(str, sources), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return output


def _tflm_outputs(model_bytes: bytes, rows: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=TFLM_ARENA_BYTES)
    outputs = []
    for row in rows:
        interpreter.set_input(row.reshape(1, -1), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)).reshape(-1))
    return np.stack(outputs).astype(np.int8)


def _engine_outputs(driver: Path, rows: np.ndarray, work: Path, n_out: int) -> np.ndarray:
    in_path, out_path = work / "rows.bin", work / "outputs.bin"
    rows.astype(np.int8).tofile(in_path)
    subprocess.run([str(driver), str(in_path), str(out_path)], check=True, capture_output=True)
    return np.fromfile(out_path, dtype=np.int8).reshape(len(rows), n_out)


def _quantize_rows(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    graph_input = load_tflite(model_bytes).tensors[load_tflite(model_bytes).inputs[0]]
    q = np.round(x / graph_input.scale) + graph_input.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


@pytest.fixture(scope="module", params=SHAPES, ids=[f"F{s[0]}-C{s[1]}-{s[5]}" for s in SHAPES])
def engine(request, tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    features, classes = request.param[:2]
    model_bytes, held_out = _train_and_convert(*request.param)
    work = tmp_path_factory.mktemp(f"native_{features}_{classes}")
    files = generate_native_engine(model_bytes, work / "gen", SOURCE_HASH)
    source = work / "gen" / "engine_native.c"
    driver = _compile([source, DRIVER], [work / "gen", asset_dir("firmware")], work / "driver")
    return {
        "model": model_bytes,
        "files": files,
        "work": work,
        "driver": driver,
        "features": features,
        "classes": classes,
        "held_out": held_out,
    }


def test_equals_tflm_on_random_rows(engine):
    rows = np.random.default_rng(11).integers(
        -128, 128, size=(RANDOM_ROWS, engine["features"]), dtype=np.int8
    )
    rows[0], rows[1] = -128, 127  # both ends of the range

    expected = _tflm_outputs(engine["model"], rows)
    actual = _engine_outputs(engine["driver"], rows, engine["work"], engine["classes"])

    mismatched = np.nonzero((actual != expected).any(axis=1))[0]
    assert mismatched.size == 0, f"rows {mismatched[:10].tolist()} differ from TFLite Micro"


def test_equals_tflm_on_rows_from_the_data(engine):
    rows = _quantize_rows(engine["model"], engine["held_out"])

    expected = _tflm_outputs(engine["model"], rows)
    actual = _engine_outputs(engine["driver"], rows, engine["work"], engine["classes"])

    mismatched = np.nonzero((actual != expected).any(axis=1))[0]
    assert mismatched.size == 0, f"rows {mismatched[:10].tolist()} differ from TFLite Micro"
    # The comparison means something only if the model's answers vary with the input.
    assert len(np.unique(expected, axis=0)) > 20
    assert len(np.unique(expected.argmax(axis=1))) > engine["classes"] // 2


def test_header_and_summary_agree(engine):
    summary = native_engine_summary(engine["model"])
    header = (engine["work"] / "gen" / "engine_native.h").read_text()
    defines = dict(re.findall(r"#define (ENGINE_\w+) (\d+)", header))
    model = load_tflite(engine["model"])

    assert [p.name for p in engine["files"]] == ["engine_native.h", "engine_native.c"]
    assert all(p.read_text().startswith(banner_for(p, SOURCE_HASH)) for p in engine["files"])
    assert int(defines["ENGINE_N_OPS"]) == len(model.operators) == len(summary["ops"])
    assert int(defines["ENGINE_SCRATCH_BYTES"]) == summary["scratch_bytes"]
    assert int(defines["ENGINE_WEIGHT_BYTES"]) == summary["weight_bytes"]
    assert int(defines["ENGINE_INPUT_SIZE"]) == engine["features"] == summary["input_size"]
    assert int(defines["ENGINE_OUTPUT_SIZE"]) == engine["classes"] == summary["output_size"]
    assert [op["macs"] for op in summary["ops"]] == [m for _, _, m in count_macs(model)]
    assert summary["macs_total"] == sum(m for _, _, m in count_macs(model))


def test_scratch_is_shared_between_layers(engine):
    model = load_tflite(engine["model"])
    summary = native_engine_summary(engine["model"])
    graph_ends = {model.inputs[0], model.outputs[0]}
    reshapes = {"RESHAPE", "EXPAND_DIMS", "SQUEEZE"}
    # Buffers live in scratch unless they are the caller's input or output, or a reshape's alias.
    activations = {
        i
        for op in model.operators
        if op.name not in reshapes
        for i in (op.inputs[0], op.outputs[0])
        if i not in graph_ends
    }
    all_separate = sum(model.tensor(i).size for i in activations)
    # No layout can beat the largest input-plus-output pair of a single op.
    busiest_op = max(
        sum(model.tensor(i).size for i in (op.inputs[0], op.outputs[0]) if i in activations)
        for op in model.operators
        if op.name not in reshapes
    )

    assert busiest_op <= summary["scratch_bytes"] < all_separate


def test_profile_build_times_every_op(engine):
    gen = engine["work"] / "gen"
    driver = _compile(
        [gen / "engine_native.c", DRIVER],
        [gen, asset_dir("firmware")],
        engine["work"] / "driver_profile",
        extra=[PROFILE_DEFINE],
    )
    rows = np.zeros((2, engine["features"]), dtype=np.int8)
    rows.tofile(engine["work"] / "profile_in.bin")

    result = subprocess.run(
        [str(driver), str(engine["work"] / "profile_in.bin"), str(engine["work"] / "p.bin")],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split() for line in result.stdout.splitlines()]

    assert [name for name, _ in lines] == op_names(load_tflite(engine["model"]))
    # The driver's tick counter advances once per read: one read closes each op.
    assert [int(ticks) for _, ticks in lines] == [1] * len(lines)


@pytest.mark.emulation
def test_cross_compiles_for_cortex_m4_without_float_code(engine):
    compiler = shutil.which("arm-none-eabi-gcc")
    if compiler is None:
        pytest.skip("arm-none-eabi-gcc is not installed")
    gen = engine["work"] / "gen"
    includes = [f"-I{gen}", f"-I{asset_dir('firmware')}"]
    for extra in ([], [PROFILE_DEFINE]):
        obj = engine["work"] / f"engine{len(extra)}.o"
        result = subprocess.run(
            [compiler, *ARM_FLAGS, *extra, *includes, str(gen / "engine_native.c"), "-o", str(obj)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        undefined = subprocess.run(
            ["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True, check=True
        ).stdout
        # No soft-float or 64-bit division helpers: the run-time maths is integer-only.
        assert not re.search(r"__aeabi_(f|d|l|ul)\w*", undefined), undefined
