"""TFLite Micro support files: the op resolver header, the measured arena, the memory budget."""

import contextlib
import functools
import logging
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from mcu_ids.build.boards import Board
from mcu_ids.build.render import render_template
from mcu_ids.errors import BoardError, ModelError
from mcu_ids.export.tflite_model import load_tflite, op_names

logger = logging.getLogger(__name__)

# Builtin op name (as in the TFLite schema) -> MicroMutableOpResolver method that registers it.
RESOLVER_METHODS = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ARG_MAX": "AddArgMax",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "EXPAND_DIMS": "AddExpandDims",
    "FULLY_CONNECTED": "AddFullyConnected",
    "HARD_SWISH": "AddHardSwish",
    "LEAKY_RELU": "AddLeakyRelu",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MUL": "AddMul",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "QUANTIZE": "AddQuantize",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "SHAPE": "AddShape",
    "SOFTMAX": "AddSoftmax",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
}

ARENA_ALIGNMENT = 16
# Far more than any model this tool builds needs; the search starts below it.
ARENA_SEARCH_LIMIT_BYTES = 1 << 22
# The margin covers what the Python runtime cannot show: the device may run another TFLM
# release (esp-tflite-micro, or the tree the user builds STM32 firmware against) whose
# allocator or optimised kernels (ESP-NN, CMSIS-NN) ask for scratch buffers the reference
# kernels do not. Host pointers are 64-bit, so the host figure already over-counts the 32-bit
# device's bookkeeping; the margin is for kernel scratch and version drift, not pointers.
ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_MIN_BYTES = 1024
ARENA_MARGIN_REASON = (
    "the device's TFLM release and its optimised kernels may need more scratch memory than the "
    "reference kernels measured here (host pointers are 64-bit, so host bookkeeping is larger)."
)
# The negative codes of firmware/engine_tflm.h, for explaining a handshake's engine status.
TFLM_ENGINE_ERRORS = {
    -1: "the model's schema version differs from the TFLM runtime's",
    -2: "the model array is not 16-byte aligned",
    -3: "the op resolver refused one of the model's ops",
    -4: "AllocateTensors failed: the arena is too small for this TFLM build, or the model is bad",
    -5: "the model's input is not int8 with MCU_IDS_N_FEATURES values",
    -6: "the model's output is not int8 with MCU_IDS_N_CLASSES values",
    -7: "an inference was requested before the engine initialised",
    -8: "Invoke failed",
}

# Inputs used to prove that an arena size gives the same outputs as an ample one.
PROBE_ROWS = 16
PROBE_SEED = 20240
INT8_MIN, INT8_MAX = -128, 127


@dataclass(frozen=True)
class ArenaMeasurement:
    """The tensor arena a model needs, found by running it in the TFLM runtime."""

    minimum_bytes: int
    margin_bytes: int
    arena_bytes: int
    alignment: int
    margin_reason: str
    runtime_version: str
    probe_rows: int
    verified: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ResolverOp:
    """One builtin op and the resolver method that registers it."""

    name: str
    method: str


def resolver_ops(tflite_bytes: bytes) -> list[ResolverOp]:
    """The model's distinct builtin ops in first-use order, each with its resolver method."""
    names = list(dict.fromkeys(op_names(load_tflite(tflite_bytes, native_only=False))))
    unknown = [name for name in names if name not in RESOLVER_METHODS]
    if unknown:
        raise ModelError(
            f"the model uses op(s) {', '.join(unknown)} that the TFLM resolver generator "
            f"does not know; known ops: {', '.join(sorted(RESOLVER_METHODS))}",
            hint="build the model from supported layers, or use the native engine if it runs it",
        )
    return [ResolverOp(name, RESOLVER_METHODS[name]) for name in names]


def generate_op_resolver(
    tflite_bytes: bytes,
    out_dir: Path,
    source_hash: str,
    arena: "ArenaMeasurement | None" = None,
) -> list[Path]:
    """Render ``op_resolver.h``: a resolver sized to the model's ops, and its arena size.

    The arena is measured (see :func:`measure_arena`) unless a measurement is passed in.
    """
    ops = resolver_ops(tflite_bytes)
    arena = arena or measure_arena(tflite_bytes)
    context = {
        "ops": ops,
        "op_names": [op.name for op in ops],
        "arena": arena,
        "arena_note": _arena_note(arena),
    }
    dest = Path(out_dir) / "op_resolver.h"
    return [render_template("tflm/op_resolver.h.j2", dest, context, source_hash)]


def _arena_note(arena: "ArenaMeasurement") -> str:
    return (
        f"The smallest arena that ran the model in the tflite-micro {arena.runtime_version} "
        f"Python runtime was {arena.minimum_bytes} bytes; {arena.margin_bytes} bytes of margin "
        f"are added (rounded to {arena.alignment} bytes) because {arena.margin_reason} "
        "engine_tflm_arena_used_bytes() reports what the device really used."
    )


def describe_engine_error(code: int) -> str:
    """Words for a negative status of the TFLM engine on a device."""
    return TFLM_ENGINE_ERRORS.get(code, f"unknown TFLM engine status {code}")


def runtime_version() -> str:
    """The installed tflite-micro runtime's version, the one arena sizes are measured with."""
    try:
        return metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _native_output_captured():
    """Send what the TFLM C++ runtime prints on stdout/stderr to a buffer instead of the user.

    Failed allocations during the search are expected and would otherwise flood the terminal.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    captured = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _probe_inputs(interpreter) -> np.ndarray:
    details = interpreter.get_input_details(0)
    shape = tuple(int(dim) for dim in details["shape"])
    if details["dtype"] is not np.int8 and np.dtype(details["dtype"]) != np.int8:
        raise ModelError(
            f"the model's input is {np.dtype(details['dtype']).name}, expected int8",
            hint="quantize with int8 inputs and outputs (`mcu-ids quantize`)",
        )
    rng = np.random.default_rng(PROBE_SEED)
    rows = [np.full(shape, INT8_MIN, np.int8), np.full(shape, INT8_MAX, np.int8)]
    rows += [
        rng.integers(INT8_MIN, INT8_MAX + 1, size=shape, dtype=np.int8)
        for _ in range(PROBE_ROWS - len(rows))
    ]
    return np.stack(rows)


def _run_all(runtime, tflite_bytes: bytes, arena_bytes: int, inputs: np.ndarray):
    """Outputs for every probe row with an arena of ``arena_bytes``, or None if TFLM fails."""
    try:
        interpreter = runtime.Interpreter.from_bytes(tflite_bytes, arena_size=arena_bytes)
        outputs = []
        for row in inputs:
            interpreter.set_input(row, 0)
            interpreter.invoke()
            outputs.append(np.array(interpreter.get_output(0)))
    except (RuntimeError, ValueError):
        return None
    return np.stack(outputs)


def _fits(runtime, tflite_bytes, arena_bytes, inputs, expected) -> bool:
    outputs = _run_all(runtime, tflite_bytes, arena_bytes, inputs)
    return outputs is not None and np.array_equal(outputs, expected)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


@functools.lru_cache(maxsize=8)
def measure_arena(tflite_bytes: bytes) -> ArenaMeasurement:
    """Find the smallest arena that runs the model correctly, add the margin, and prove it.

    "Correctly" means the TFLM runtime allocates, invokes, and gives outputs identical to those
    with an ample arena on a fixed set of probe inputs. The size to use is then run again with
    the same probes before it is returned.
    """
    from tflite_micro.python.tflite_micro import runtime

    tflite_bytes = bytes(tflite_bytes)
    with _native_output_captured() as log:
        try:
            ample = runtime.Interpreter.from_bytes(
                tflite_bytes, arena_size=ARENA_SEARCH_LIMIT_BYTES
            )
        except (RuntimeError, ValueError) as exc:
            ample = exc
        if isinstance(ample, Exception):
            inputs = expected = None
        else:
            inputs = _probe_inputs(ample)
            expected = _run_all(runtime, tflite_bytes, ARENA_SEARCH_LIMIT_BYTES, inputs)
        if expected is not None:
            minimum = _smallest_fitting(runtime, tflite_bytes, inputs, expected)
            margin = max(math.ceil(minimum * ARENA_MARGIN_FRACTION), ARENA_MARGIN_MIN_BYTES)
            arena_bytes = _round_up(minimum + margin, ARENA_ALIGNMENT)
            verified = _fits(runtime, tflite_bytes, arena_bytes, inputs, expected)
    if expected is None:
        raise ModelError(
            f"TFLite Micro cannot run the model even with a {ARENA_SEARCH_LIMIT_BYTES} byte arena: "
            f"{_last_line(log)}",
            hint="check the model with `mcu-ids quantize`; it may use an op TFLM lacks",
        )
    logger.debug("TFLM runtime output during the arena search:\n%s", "".join(log))
    if not verified:
        raise ModelError(
            f"the TFLM runtime failed with the chosen arena of {arena_bytes} bytes although "
            f"{minimum} bytes worked",
            hint="report this model; the runtime's allocation is not monotonic for it",
        )
    measurement = ArenaMeasurement(
        minimum_bytes=minimum,
        margin_bytes=arena_bytes - minimum,
        arena_bytes=arena_bytes,
        alignment=ARENA_ALIGNMENT,
        margin_reason=ARENA_MARGIN_REASON,
        runtime_version=runtime_version(),
        probe_rows=len(inputs),
        verified=verified,
    )
    logger.info(
        "TFLM arena: %d bytes needed, %d bytes with margin", minimum, measurement.arena_bytes
    )
    return measurement


def _smallest_fitting(runtime, tflite_bytes, inputs, expected) -> int:
    """Binary search, in steps of the arena alignment, for the smallest size that fits."""
    low, high = 0, ARENA_SEARCH_LIMIT_BYTES // ARENA_ALIGNMENT  # low fails, high fits
    while high - low > 1:
        middle = (low + high) // 2
        if _fits(runtime, tflite_bytes, middle * ARENA_ALIGNMENT, inputs, expected):
            high = middle
        else:
            low = middle
    return high * ARENA_ALIGNMENT


def _last_line(log: list[str]) -> str:
    lines = [line for line in "".join(log).splitlines() if line.strip()]
    return lines[-1] if lines else "no message from the runtime"


@dataclass(frozen=True)
class MemoryReport:
    """Where the model, its arena and the firmware go on a board, against its flash and RAM."""

    board: str
    flash_budget_bytes: int
    ram_budget_bytes: int
    model_flash_bytes: int
    firmware_flash_bytes: int
    arena_bytes: int
    firmware_ram_bytes: int

    @property
    def flash_used_bytes(self) -> int:
        return self.model_flash_bytes + self.firmware_flash_bytes

    @property
    def ram_used_bytes(self) -> int:
        return self.arena_bytes + self.firmware_ram_bytes

    def as_dict(self) -> dict:
        data = asdict(self)
        data["flash_used_bytes"] = self.flash_used_bytes
        data["ram_used_bytes"] = self.ram_used_bytes
        return data

    def as_text(self) -> str:
        """A small table for the terminal and reports."""
        rows = [
            ("flash", self.flash_used_bytes, self.flash_budget_bytes),
            ("RAM", self.ram_used_bytes, self.ram_budget_bytes),
        ]
        lines = [f"memory on {self.board}:"]
        for name, used, budget in rows:
            share = 100.0 * used / budget
            lines.append(f"  {name:<5} {_kib(used):>9} of {_kib(budget):>9} ({share:5.1f} %)")
        if self.firmware_flash_bytes or self.firmware_ram_bytes:
            rest = (
                f"rest of the firmware {_kib(self.firmware_flash_bytes)} flash, "
                f"{_kib(self.firmware_ram_bytes)} RAM (from the built image)"
            )
        else:
            rest = "rest of the firmware not measured: model and arena only"
        lines.append(
            f"  model {_kib(self.model_flash_bytes)} flash, arena {_kib(self.arena_bytes)} RAM; "
            + rest
        )
        return "\n".join(lines)


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB"


def memory_report(
    board: Board,
    model_flash_bytes: int,
    arena_bytes: int,
    firmware_flash_bytes: int = 0,
    firmware_ram_bytes: int = 0,
) -> MemoryReport:
    """The model, arena and firmware estimates set against ``board.flash_kib``/``ram_kib``.

    The firmware figures are the caller's estimates (runtime, drivers, stacks); leaving them at
    zero checks the model and arena alone, which the report states.
    """
    for name, value in (
        ("model_flash_bytes", model_flash_bytes),
        ("arena_bytes", arena_bytes),
        ("firmware_flash_bytes", firmware_flash_bytes),
        ("firmware_ram_bytes", firmware_ram_bytes),
    ):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    return MemoryReport(
        board=board.name,
        flash_budget_bytes=board.flash_kib * 1024,
        ram_budget_bytes=board.ram_kib * 1024,
        model_flash_bytes=model_flash_bytes,
        firmware_flash_bytes=firmware_flash_bytes,
        arena_bytes=arena_bytes,
        firmware_ram_bytes=firmware_ram_bytes,
    )


def check_fits(report: MemoryReport) -> None:
    """Raise BoardError saying by how much the flash or RAM budget is exceeded."""
    excess = [
        (name, used - budget)
        for name, used, budget in (
            ("flash", report.flash_used_bytes, report.flash_budget_bytes),
            ("RAM", report.ram_used_bytes, report.ram_budget_bytes),
        )
        if used > budget
    ]
    if excess:
        parts = "; ".join(f"{name} too large by {over / 1024:.1f} KiB" for name, over in excess)
        raise BoardError(
            f"the model does not fit board '{report.board}': {parts}",
            hint="train a smaller model (fewer filters) or pick a board with more memory "
            "(`mcu-ids boards`)",
        )
