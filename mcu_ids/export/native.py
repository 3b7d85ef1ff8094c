"""Generate the dependency-free C engine (``engine_native.c`` + ``engine_native.h``) from a model.

Every op becomes one C function whose loop bounds, offsets and clamps are constants; weights,
folded biases and per-channel requantization multipliers are ``const`` arrays computed here the
way TFLite Micro computes them, so the engine's int8 outputs equal TFLite Micro's bit for bit.
Activations live in one static scratch buffer whose layout is planned here from tensor lifetimes.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcu_ids.build.render import render_template
from mcu_ids.errors import ModelError
from mcu_ids.export.tflite_model import (
    Operator,
    TfliteModel,
    count_macs,
    load_tflite,
    quantize_multiplier,
)

logger = logging.getLogger(__name__)

TEMPLATE_DIR = "native"
ENGINE_SOURCE = "engine_native.c"
ENGINE_HEADER = "engine_native.h"

# Scratch offsets are aligned so that a later int32 tensor or a word-wise copy stays aligned.
SCRATCH_ALIGN_BYTES = 4
INT8_MIN, INT8_MAX = -128, 127
# Initialiser rows are indented by 4 and end with a comma: 100-column lines at most.
C_ROW_WIDTH = 95

# Softmax, as TFLite Micro runs it for int8: differences are scaled into Q5.26 before exp().
SOFTMAX_DIFF_INTEGER_BITS = 5
SOFTMAX_OUTPUT_ZERO_POINT = -128
SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0

_ALIAS_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")


@dataclass
class _Storage:
    """Where a group of tensors sharing one buffer lives: the caller's input/output or scratch."""

    kind: str  # "input", "output" or "scratch"
    size: int
    first_op: int
    last_op: int
    offset: int = 0
    end: int = 0

    def expression(self) -> str:
        if self.kind == "scratch":
            return f"engine_scratch + {self.offset}"
        return self.kind


@dataclass
class _Plan:
    """Everything the templates need, plus the figures for the summary."""

    ops: list[dict] = field(default_factory=list)
    arrays: list[dict] = field(default_factory=list)
    scratch_bytes: int = 0
    input_size: int = 0
    output_size: int = 0
    uses_requantize: bool = False
    uses_softmax: bool = False

    @property
    def weight_bytes(self) -> int:
        return sum(array["bytes"] for array in self.arrays)


def generate_native_engine(tflite_bytes: bytes, out_dir: Path, source_hash: str) -> list[Path]:
    """Render ``engine_native.c`` and ``engine_native.h`` for the model into ``out_dir``.

    Returns the paths written. Raises :class:`ModelError` if the model uses something the
    engine cannot run.
    """
    model = load_tflite(tflite_bytes)
    plan = _plan_engine(model)
    out_dir = Path(out_dir)
    context = _template_context(plan)
    written = [
        render_template(
            f"{TEMPLATE_DIR}/{ENGINE_HEADER}.j2", out_dir / ENGINE_HEADER, context, source_hash
        ),
        render_template(
            f"{TEMPLATE_DIR}/{ENGINE_SOURCE}.j2", out_dir / ENGINE_SOURCE, context, source_hash
        ),
    ]
    logger.info(
        "native engine: %d ops, %d bytes of scratch, %d bytes of weights",
        len(plan.ops),
        plan.scratch_bytes,
        plan.weight_bytes,
    )
    return written


def native_engine_summary(tflite_bytes: bytes) -> dict:
    """Ops, scratch bytes, weight bytes and MACs per op of the engine the model would produce."""
    model = load_tflite(tflite_bytes)
    plan = _plan_engine(model)
    macs = {index: value for index, _, value in count_macs(model)}
    ops = [
        {
            "index": op["index"],
            "name": op["name"],
            "macs": macs[op["index"]],
            "output_shape": list(model.tensor(model.operators[op["index"]].outputs[0]).shape),
        }
        for op in plan.ops
    ]
    return {
        "ops": ops,
        "scratch_bytes": plan.scratch_bytes,
        "weight_bytes": plan.weight_bytes,
        "macs_total": sum(macs.values()),
        "input_size": plan.input_size,
        "output_size": plan.output_size,
    }


def _template_context(plan: _Plan) -> dict:
    return {
        "ops": plan.ops,
        "arrays": plan.arrays,
        "n_ops": len(plan.ops),
        "scratch_bytes": plan.scratch_bytes,
        "scratch_alloc_bytes": max(plan.scratch_bytes, SCRATCH_ALIGN_BYTES),
        "input_size": plan.input_size,
        "output_size": plan.output_size,
        "weight_bytes": plan.weight_bytes,
        "uses_requantize": plan.uses_requantize,
        "uses_softmax": plan.uses_softmax,
    }


def _plan_engine(model: TfliteModel) -> _Plan:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; the "
            "native engine runs models with one input and one output",
            hint="export a Keras model with a single input and a single output",
        )
    plan = _Plan(
        input_size=model.tensor(model.inputs[0]).size,
        output_size=model.tensor(model.outputs[0]).size,
    )
    storage = _plan_memory(model)
    plan.scratch_bytes = _place_in_scratch(storage)
    for op in model.operators:
        plan.ops.append(_plan_op(model, op, storage, plan))
    return plan


def _plan_memory(model: TfliteModel) -> dict[int, _Storage]:
    """Give every activation tensor a storage; reshape-like ops share their input's storage."""
    graph_input, graph_output = model.inputs[0], model.outputs[0]
    storage: dict[int, _Storage] = {}

    def storage_for(index: int, op_index: int) -> _Storage:
        if index not in storage:
            tensor = model.tensor(index)
            kind = {graph_input: "input", graph_output: "output"}.get(index, "scratch")
            storage[index] = _Storage(kind, tensor.size, op_index, op_index)
        return storage[index]

    storage_for(graph_input, 0)
    for op in model.operators:
        for index in _activation_inputs(model, op):
            if index not in storage:
                raise ModelError(
                    f"op {op.index} ({op.name}) reads tensor {index} before any op writes it",
                    hint="the graph is not in execution order; run `mcu-ids quantize` again",
                )
            storage[index].last_op = max(storage[index].last_op, op.index)
        out = op.outputs[0]
        if _is_alias(model, op):
            shared = storage[op.inputs[0]]
            storage[out] = shared
            shared.last_op = max(shared.last_op, op.index)
        else:
            storage_for(out, op.index)
    storage[graph_output].last_op = len(model.operators)
    return storage


def _is_alias(model: TfliteModel, op: Operator) -> bool:
    # A reshape into the caller's output buffer must copy; any other reshape just renames.
    return op.name in _ALIAS_OPS and op.outputs[0] != model.outputs[0]


def _activation_inputs(model: TfliteModel, op: Operator) -> list[int]:
    return [i for i in op.inputs if i >= 0 and not model.tensor(i).is_constant]


def _place_in_scratch(storage: dict[int, _Storage]) -> int:
    """Place scratch buffers at offsets; returns the bytes needed.

    Greedy first-fit (each buffer at the lowest offset free during its lifetime) in a few
    orders - largest first, as TFLite Micro's planner does, and by time of first or last use -
    keeping the smallest layout.
    """
    buffers = list({id(s): s for s in storage.values() if s.kind == "scratch"}.values())
    orders = (
        lambda s: (-s.size, s.first_op),
        lambda s: (s.first_op, -s.size),
        lambda s: (-s.last_op, -s.size),
    )
    best = None
    for order in orders:
        layout = _first_fit(sorted(buffers, key=order))
        if best is None or layout[0] < best[0]:
            best = layout
    total, offsets = best
    for buf in buffers:
        buf.offset = offsets[id(buf)]
        buf.end = buf.offset + buf.size
    return total


def _first_fit(buffers: list[_Storage]) -> tuple[int, dict[int, int]]:
    placed: list[tuple[_Storage, int]] = []
    for buf in buffers:
        live = [
            (other, start)
            for other, start in placed
            if other.first_op <= buf.last_op and buf.first_op <= other.last_op
        ]
        candidates = sorted({0, *(_align(start + other.size) for other, start in live)})
        offset = next(
            candidate
            for candidate in candidates
            if all(
                candidate + buf.size <= start or candidate >= start + other.size
                for other, start in live
            )
        )
        placed.append((buf, offset))
    total = max((start + buf.size for buf, start in placed), default=0)
    return total, {id(buf): start for buf, start in placed}


def _align(value: int) -> int:
    return (value + SCRATCH_ALIGN_BYTES - 1) // SCRATCH_ALIGN_BYTES * SCRATCH_ALIGN_BYTES


def _plan_op(model: TfliteModel, op: Operator, storage: dict[int, _Storage], plan: _Plan) -> dict:
    planners = {
        "CONV_2D": _plan_conv,
        "DEPTHWISE_CONV_2D": _plan_depthwise,
        "FULLY_CONNECTED": _plan_fully_connected,
        "MAX_POOL_2D": _plan_pool,
        "AVERAGE_POOL_2D": _plan_pool,
        "MEAN": _plan_mean,
        "SOFTMAX": _plan_softmax,
    }
    base = {
        "index": op.index,
        "name": op.name,
        "function": f"op_{op.index:02d}_{op.name.lower()}",
        "input": storage[op.inputs[0]].expression(),
        "output": storage[op.outputs[0]].expression(),
    }
    if op.name in _ALIAS_OPS:
        aliased = _is_alias(model, op)
        return {**base, "kind": "alias" if aliased else "copy", "size": _output(model, op).size}
    details = planners[op.name](model, op, plan)
    return {**base, **details}


def _output(model: TfliteModel, op: Operator):
    return model.tensor(op.outputs[0])


def _nhwc(shape: tuple[int, ...], what: str, op: Operator) -> tuple[int, int, int]:
    if len(shape) != 4 or shape[0] != 1:
        raise ModelError(
            f"op {op.index} ({op.name}) has {what} shape {list(shape)}; the native engine runs "
            "batch-1 NHWC tensors",
            hint="build the deploy model with keras.Input(..., batch_size=1)",
        )
    return shape[1], shape[2], shape[3]


def _conv_geometry(op: Operator, in_hw, out_hw, kernel_hw) -> dict:
    """Padding and bounds of a windowed op, computed the way TFLite Micro computes them."""
    opts = op.options
    geometry = {}
    inside = True
    for axis, in_size, out_size, kernel in zip("hw", in_hw, out_hw, kernel_hw, strict=True):
        stride = opts[f"stride_{axis}"]
        dilation = opts.get(f"dilation_{axis}", 1)
        effective = (kernel - 1) * dilation + 1
        if opts["padding"] == "SAME":
            expected = (in_size + stride - 1) // stride
        elif opts["padding"] == "VALID":
            expected = (in_size + stride - effective) // stride
        else:
            raise ModelError(
                f"op {op.index} ({op.name}) uses padding {opts['padding']}; supported: SAME, VALID",
                hint="use padding='same' or 'valid' in the layer",
            )
        if expected != out_size:
            raise ModelError(
                f"op {op.index} ({op.name}) has output size {out_size} along {axis}, the padding "
                f"rules give {expected}",
                hint="the file is inconsistent; write it again with `mcu-ids quantize`",
            )
        total = max((out_size - 1) * stride + effective - in_size, 0)
        geometry[f"pad_{axis}"] = total // 2
        geometry[f"stride_{axis}"] = stride
        geometry[f"dilation_{axis}"] = dilation
        inside = inside and total == 0
    geometry["all_inside"] = inside
    return geometry


def _activation_range(op: Operator, output) -> tuple[int, int]:
    """Clamp bounds of a fused activation in the output's quantized domain (float32 maths)."""
    scale = np.float32(output.scale)
    zero_point = output.zero_point

    def quantize(value: float) -> int:
        return zero_point + _round_half_away(float(np.float32(value) / scale))

    activation = op.options.get("activation", "NONE")
    if activation == "NONE":
        return INT8_MIN, INT8_MAX
    if activation == "RELU":
        return max(INT8_MIN, quantize(0.0)), INT8_MAX
    if activation == "RELU6":
        return max(INT8_MIN, quantize(0.0)), min(INT8_MAX, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(INT8_MIN, quantize(-1.0)), min(INT8_MAX, quantize(1.0))
    raise ModelError(
        f"op {op.index} ({op.name}) has fused activation {activation}; "
        "supported: NONE, RELU, RELU6, RELU_N1_TO_1",
        hint="use a ReLU or no activation after convolutions and dense layers",
    )


def _round_half_away(value: float) -> int:
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def _per_channel_multipliers(input_scale, filter_scales, output_scale, channels: int):
    """Requantization multipliers as TFLite Micro's convolution kernels compute them."""
    scales = np.broadcast_to(np.asarray(filter_scales, dtype=np.float32), (channels,))
    pairs = [
        quantize_multiplier(float(input_scale) * float(scale) / float(output_scale))
        for scale in scales
    ]
    return [m for m, _ in pairs], [s for _, s in pairs]


def _bias_values(model: TfliteModel, op: Operator, channels: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = model.tensor(op.inputs[2])
        if bias.dtype != "INT32" or bias.data is None:
            raise ModelError(
                f"op {op.index} ({op.name}) has a {bias.dtype.lower()} bias; the native engine "
                "needs constant int32 biases",
                hint="quantize with TFLITE_BUILTINS_INT8 (int8 weights, int32 biases)",
            )
        return bias.data.astype(np.int64).reshape(channels)
    return np.zeros(channels, dtype=np.int64)


def _constant_filter(model: TfliteModel, op: Operator):
    filt = model.tensor(op.inputs[1])
    if filt.data is None or filt.dtype != "INT8" or filt.quantization is None:
        raise ModelError(
            f"op {op.index} ({op.name}) needs constant int8 weights, found "
            f"{filt.dtype.lower()} {'constant' if filt.is_constant else 'activation'}",
            hint="quantize with TFLITE_BUILTINS_INT8 so weights are stored as int8",
        )
    if np.any(filt.quantization.zero_points != 0):
        raise ModelError(
            f"op {op.index} ({op.name}) has weights with a non-zero zero point; "
            "int8 weights must be symmetric",
            hint="quantize with the TFLite converter's default int8 scheme",
        )
    return filt


def _add_array(plan: _Plan, op: Operator, role: str, ctype: str, values) -> str:
    name = f"op{op.index:02d}_{role}"
    values = [int(v) for v in np.asarray(values).reshape(-1)]
    itemsize = {"int8_t": 1, "int32_t": 4}[ctype]
    plan.arrays.append(
        {
            "name": name,
            "ctype": ctype,
            "length": len(values),
            "bytes": itemsize * len(values),
            "rows": _c_rows(values),
        }
    )
    return name


def _c_rows(values: list[int]) -> list[str]:
    """Initialiser values in rows that fit the C line limit once indented."""
    rows, current = [], []
    for text in (str(v) for v in values):
        if current and len(", ".join([*current, text])) + 1 > C_ROW_WIDTH:
            rows.append(", ".join(current))
            current = []
        current.append(text)
    if current:
        rows.append(", ".join(current))
    return rows


def _requant_arrays(plan: _Plan, op: Operator, multipliers, shifts) -> dict:
    plan.uses_requantize = True
    return {
        "multiplier": _add_array(plan, op, "multiplier", "int32_t", multipliers),
        "shift": _add_array(plan, op, "shift", "int8_t", shifts),
    }


def _plan_conv(model: TfliteModel, op: Operator, plan: _Plan) -> dict:
    inp, out = model.tensor(op.inputs[0]), _output(model, op)
    filt = _constant_filter(model, op)
    in_h, in_w, in_c = _nhwc(inp.shape, "input", op)
    out_h, out_w, out_c = _nhwc(out.shape, "output", op)
    f_out, k_h, k_w, f_in = filt.shape
    if f_out != out_c or f_in != in_c:
        raise ModelError(
            f"op {op.index} (CONV_2D) has filter shape {list(filt.shape)} for {in_c} input and "
            f"{out_c} output channels; grouped convolutions are not supported",
            hint="use groups=1 in convolution layers",
        )
    geometry = _conv_geometry(op, (in_h, in_w), (out_h, out_w), (k_h, k_w))
    weights = filt.data.astype(np.int64)
    bias = _bias_values(model, op, out_c)
    input_offset = -inp.zero_point
    if geometry["all_inside"]:
        # Every tap reads a real input, so the input offset's share is a per-channel constant.
        bias = bias + input_offset * weights.reshape(out_c, -1).sum(axis=1)
    multipliers, shifts = _per_channel_multipliers(
        inp.scale, filt.quantization.scales, out.scale, out_c
    )
    act_min, act_max = _activation_range(op, out)
    return {
        "kind": "conv",
        "in_h": in_h,
        "in_w": in_w,
        "in_c": in_c,
        "out_h": out_h,
        "out_w": out_w,
        "out_c": out_c,
        "k_h": k_h,
        "k_w": k_w,
        **geometry,
        "input_offset": input_offset,
        "output_offset": out.zero_point,
        "act_min": act_min,
        "act_max": act_max,
        "filter": _add_array(plan, op, "filter", "int8_t", weights),
        "bias": _add_array(plan, op, "bias", "int32_t", _int32(bias, op)),
        **_requant_arrays(plan, op, multipliers, shifts),
    }


def _plan_depthwise(model: TfliteModel, op: Operator, plan: _Plan) -> dict:
    inp, out = model.tensor(op.inputs[0]), _output(model, op)
    filt = _constant_filter(model, op)
    in_h, in_w, in_c = _nhwc(inp.shape, "input", op)
    out_h, out_w, out_c = _nhwc(out.shape, "output", op)
    _, k_h, k_w, f_out = filt.shape
    multiplier = out_c // in_c if in_c else 0
    if f_out != out_c or multiplier * in_c != out_c:
        raise ModelError(
            f"op {op.index} (DEPTHWISE_CONV_2D) maps {in_c} to {out_c} channels with filter "
            f"shape {list(filt.shape)}; the output channels must be a multiple of the input's",
            hint="the file is inconsistent; write it again with `mcu-ids quantize`",
        )
    geometry = _conv_geometry(op, (in_h, in_w), (out_h, out_w), (k_h, k_w))
    weights = filt.data.astype(np.int64).reshape(k_h * k_w, out_c)
    bias = _bias_values(model, op, out_c)
    input_offset = -inp.zero_point
    if geometry["all_inside"]:
        bias = bias + input_offset * weights.sum(axis=0)
    multipliers, shifts = _per_channel_multipliers(
        inp.scale, filt.quantization.scales, out.scale, out_c
    )
    act_min, act_max = _activation_range(op, out)
    return {
        "kind": "depthwise",
        "in_h": in_h,
        "in_w": in_w,
        "in_c": in_c,
        "out_h": out_h,
        "out_w": out_w,
        "out_c": out_c,
        "depth_multiplier": multiplier,
        "k_h": k_h,
        "k_w": k_w,
        **geometry,
        "input_offset": input_offset,
        "output_offset": out.zero_point,
        "act_min": act_min,
        "act_max": act_max,
        "filter": _add_array(plan, op, "filter", "int8_t", weights),
        "bias": _add_array(plan, op, "bias", "int32_t", _int32(bias, op)),
        **_requant_arrays(plan, op, multipliers, shifts),
    }


def _plan_fully_connected(model: TfliteModel, op: Operator, plan: _Plan) -> dict:
    inp, out = model.tensor(op.inputs[0]), _output(model, op)
    filt = _constant_filter(model, op)
    if op.options.get("weights_format", 0) != 0 or len(filt.shape) != 2:
        raise ModelError(
            f"op {op.index} (FULLY_CONNECTED) uses a shuffled or non-2D weight layout",
            hint="convert with the default weight format",
        )
    units, depth = filt.shape
    if inp.size % depth:
        raise ModelError(
            f"op {op.index} (FULLY_CONNECTED) has {inp.size} inputs, not a multiple of {depth}",
            hint="the file is inconsistent; write it again with `mcu-ids quantize`",
        )
    weights = filt.data.astype(np.int64)
    bias = _bias_values(model, op, units) - inp.zero_point * weights.sum(axis=1)
    scales = filt.quantization.scales
    if len(scales) > 1:
        multipliers, shifts = _per_channel_multipliers(inp.scale, scales, out.scale, units)
    else:
        # Per-tensor weights: TFLite Micro multiplies the two float scales in float first.
        product = float(np.float32(inp.scale) * np.float32(scales[0]))
        multiplier, shift = quantize_multiplier(product / float(out.scale))
        multipliers, shifts = [multiplier] * units, [shift] * units
    act_min, act_max = _activation_range(op, out)
    return {
        "kind": "fully_connected",
        "batches": inp.size // depth,
        "depth": depth,
        "units": units,
        "output_offset": out.zero_point,
        "act_min": act_min,
        "act_max": act_max,
        "filter": _add_array(plan, op, "filter", "int8_t", weights),
        "bias": _add_array(plan, op, "bias", "int32_t", _int32(bias, op)),
        **_requant_arrays(plan, op, multipliers, shifts),
    }


def _plan_pool(model: TfliteModel, op: Operator, plan: _Plan) -> dict:
    inp, out = model.tensor(op.inputs[0]), _output(model, op)
    in_h, in_w, channels = _nhwc(inp.shape, "input", op)
    out_h, out_w, out_c = _nhwc(out.shape, "output", op)
    k_h, k_w = op.options["filter_h"], op.options["filter_w"]
    geometry = _conv_geometry(op, (in_h, in_w), (out_h, out_w), (k_h, k_w))
    act_min, act_max = _activation_range(op, out)
    return {
        "kind": "max_pool" if op.name == "MAX_POOL_2D" else "average_pool",
        "in_h": in_h,
        "in_w": in_w,
        "channels": channels,
        "out_h": out_h,
        "out_w": out_w,
        "k_h": k_h,
        "k_w": k_w,
        **geometry,
        "act_min": act_min,
        "act_max": act_max,
    }


def _plan_mean(model: TfliteModel, op: Operator, plan: _Plan) -> dict:
    inp, out = model.tensor(op.inputs[0]), _output(model, op)
    axes = _resolved_axes(op, len(inp.shape))
    outer = int(np.prod(inp.shape[: axes[0]], dtype=np.int64))
    reduce = int(np.prod(inp.shape[axes[0] : axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(inp.shape[axes[-1] + 1 :], dtype=np.int64))
    details = {"kind": "mean", "outer": outer, "reduce": reduce, "inner": inner}
    same_quantization = inp.zero_point == out.zero_point and np.float32(inp.scale) == np.float32(
        out.scale
    )
    if same_quantization:
        # TFLite Micro then divides the raw sum, truncating toward zero.
        return {**details, "requantize": False}
    multiplier, shift = quantize_multiplier(float(inp.scale) / float(out.scale))
    # Fold 1/count into the multiplier, keeping the shift within what the rounding code accepts.
    count_shift = min(reduce.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << count_shift) // reduce
    shift -= count_shift
    plan.uses_requantize = True
    return {
        **details,
        "requantize": True,
        "multiplier": multiplier,
        "shift": shift,
        "input_zero_point_sum": inp.zero_point * reduce,
        "output_offset": out.zero_point,
    }


def _resolved_axes(op: Operator, rank: int) -> list[int]:
    if "axes" not in op.options:
        raise ModelError(
            f"op {op.index} (MEAN) takes its axes from a computed tensor; the native engine "
            "needs constant axes",
            hint="use GlobalAveragePooling or a mean over fixed axes",
        )
    axes = sorted({a + rank if a < 0 else a for a in op.options["axes"]})
    if not axes or axes[0] < 0 or axes[-1] >= rank or axes != list(range(axes[0], axes[-1] + 1)):
        raise ModelError(
            f"op {op.index} (MEAN) reduces axes {list(op.options['axes'])} of a rank-{rank} "
            "tensor; the native engine reduces one run of adjacent axes",
            hint="use GlobalAveragePooling1D or GlobalAveragePooling2D",
        )
    return axes


def _plan_softmax(model: TfliteModel, op: Operator, plan: _Plan) -> dict:
    inp, out = model.tensor(op.inputs[0]), _output(model, op)
    if out.zero_point != SOFTMAX_OUTPUT_ZERO_POINT or np.float32(out.scale) != np.float32(
        SOFTMAX_OUTPUT_SCALE
    ):
        raise ModelError(
            f"op {op.index} (SOFTMAX) has output scale {out.scale} and zero point "
            f"{out.zero_point}; int8 softmax needs 1/256 and -128",
            hint="convert with the TFLite converter, which fixes these values",
        )
    integer_bits = SOFTMAX_DIFF_INTEGER_BITS
    real = min(
        float(op.options["beta"]) * float(inp.scale) * (1 << (31 - integer_bits)),
        float((1 << 31) - 1),
    )
    multiplier, left_shift = quantize_multiplier(real)
    if real <= 1.0 or left_shift < 0:
        raise ModelError(
            f"op {op.index} (SOFTMAX) has input scale {inp.scale}, too small for int8 softmax",
            hint="check the calibration data: the logits collapsed to a tiny range",
        )
    radius = ((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift)
    depth = inp.shape[-1]
    plan.uses_softmax = True
    return {
        "kind": "softmax",
        "outer": inp.size // depth,
        "depth": depth,
        "multiplier": multiplier,
        "left_shift": left_shift,
        "diff_min": -math.floor(radius),
    }


def _int32(values: np.ndarray, op: Operator) -> np.ndarray:
    if (
        values.min(initial=0) < np.iinfo(np.int32).min
        or values.max(initial=0) > np.iinfo(np.int32).max
    ):
        raise ModelError(
            f"op {op.index} ({op.name}) has a bias that overflows int32 once the input offset is "
            "folded in",
            hint="the weights are out of range; check the quantization",
        )
    return values.astype(np.int32)
