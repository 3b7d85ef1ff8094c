"""Read a ``.tflite`` flatbuffer into plain dataclasses, without importing TensorFlow.

The schema module shipped with the tflite-micro package does the flatbuffer decoding; this module
turns its object tree into tensors and operators with the few options the code generators need,
and checks that the graph is one the native engine can run.
"""

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from mcu_ids.errors import ModelError

logger = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"
# A flatbuffer starts with a 4-byte root offset followed by the 4-byte file identifier.
_IDENTIFIER_SLICE = slice(4, 8)

# Ops the generated C engine implements. Data-movement ops that only rename a buffer are listed
# with the arithmetic ones because the engine handles them (as aliases or copies).
NATIVE_OPS = (
    "AVERAGE_POOL_2D",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "EXPAND_DIMS",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "MEAN",
    "RESHAPE",
    "SOFTMAX",
    "SQUEEZE",
)

# Tensor types the engine accepts: int8 activations and weights, int32 biases and shape operands.
_NATIVE_TENSOR_TYPES = ("INT8", "INT32")

_NUMPY_DTYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "UINT16": np.uint16,
    "INT32": np.int32,
    "UINT32": np.uint32,
    "INT64": np.int64,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: one scale and zero point per channel, or one in all."""

    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dimension: int

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1


@dataclass
class Tensor:
    """One tensor of the graph; ``data`` holds the constant content, or None for activations."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def scale(self) -> float:
        """The per-tensor scale (the first one for a per-channel tensor)."""
        return float(self.quantization.scales[0]) if self.quantization else 0.0

    @property
    def zero_point(self) -> int:
        return int(self.quantization.zero_points[0]) if self.quantization else 0


@dataclass
class Operator:
    """One node of the graph in execution order; input index -1 marks an absent optional input."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass
class TfliteModel:
    """A single-subgraph TFLite model as plain data."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]


def load_tflite(data: bytes, *, native_only: bool = True) -> TfliteModel:
    """Parse a ``.tflite`` file's bytes into a :class:`TfliteModel`.

    With ``native_only`` (the default) the graph must also be one the native C engine runs:
    int8 activations and only the ops in :data:`NATIVE_OPS`. Pass ``native_only=False`` to read
    any single-subgraph model, e.g. to list the ops a TFLite Micro resolver needs.
    Raises :class:`ModelError` for anything else.
    """
    data = bytes(data)
    _check_identifier(data)
    raw = _unpack(data)
    subgraphs = raw.subgraphs or []
    if len(subgraphs) != 1:
        raise ModelError(
            f"the model has {len(subgraphs)} subgraphs; only single-subgraph models are supported",
            hint="export one Keras model without control flow (no tf.cond or while loops)",
        )
    graph = subgraphs[0]
    op_codes = [_builtin_name(code) for code in (raw.operatorCodes or [])]
    tensors = [
        _read_tensor(index, tensor, raw.buffers or [], data)
        for index, tensor in enumerate(graph.tensors or [])
    ]
    operators = [
        _read_operator(index, op, op_codes, tensors)
        for index, op in enumerate(graph.operators or [])
    ]
    model = TfliteModel(
        tensors=tensors,
        operators=operators,
        inputs=[int(i) for i in _as_list(graph.inputs)],
        outputs=[int(i) for i in _as_list(graph.outputs)],
        description=_text(raw.description),
    )
    _check_references(model)
    if native_only:
        check_native_support(model)
    logger.debug("read a model with %d tensors and %d ops", len(tensors), len(operators))
    return model


def op_names(model: TfliteModel) -> list[str]:
    """The builtin name of every operator in execution order (repeats included)."""
    return [op.name for op in model.operators]


def count_macs(model: TfliteModel) -> list[tuple[int, str, int]]:
    """Multiply-accumulates of weights by activations per op, from the tensor shapes.

    Convolutions and fully connected layers count one MAC per weight use; ops without weights
    (pooling, mean, softmax, reshapes) count 0.
    """
    result = []
    for op in model.operators:
        result.append((op.index, op.name, _op_macs(model, op)))
    return result


def check_native_support(model: TfliteModel) -> None:
    """Raise :class:`ModelError` unless every op and activation is one the native engine runs."""
    unsupported = sorted({op.name for op in model.operators if op.name not in NATIVE_OPS})
    if unsupported:
        raise ModelError(
            f"the native engine does not support op {', '.join(unsupported)}; "
            f"supported ops: {', '.join(NATIVE_OPS)}",
            hint="build the firmware with the tflm engine, or change the layer that produced it",
        )
    for index in model.inputs + model.outputs:
        tensor = model.tensor(index)
        if tensor.dtype != "INT8":
            raise ModelError(
                f"model tensor {tensor.name!r} is {tensor.dtype.lower()}; the native engine needs "
                "int8 inputs and outputs",
                hint="convert with inference_input_type and inference_output_type set to int8",
            )
    for tensor in model.tensors:
        if tensor.dtype not in _NATIVE_TENSOR_TYPES:
            raise ModelError(
                f"model tensor {tensor.name!r} is {tensor.dtype.lower()}; the native engine runs "
                "int8 graphs (int8 activations and weights, int32 biases)",
                hint="quantize to int8 with a representative dataset and TFLITE_BUILTINS_INT8",
            )
    for op in model.operators:
        for index in op.inputs + op.outputs:
            tensor = model.tensor(index) if index >= 0 else None
            if tensor is not None and not tensor.is_constant and tensor.dtype != "INT8":
                raise ModelError(
                    f"op {op.index} ({op.name}) has a {tensor.dtype.lower()} activation "
                    f"{tensor.name!r}; the native engine needs int8 activations",
                    hint="quantize fully to int8 with TFLITE_BUILTINS_INT8",
                )


def _check_identifier(data: bytes) -> None:
    if len(data) < 8 or data[_IDENTIFIER_SLICE] != TFLITE_IDENTIFIER:
        raise ModelError(
            f"the data is not a TFLite model (expected the identifier {TFLITE_IDENTIFIER!r} at "
            f"byte 4, found {data[_IDENTIFIER_SLICE]!r})",
            hint="pass the .tflite file written by the quantize step",
        )


def _unpack(data: bytes):
    from tflite_micro.python.tflite_micro import runtime

    schema = runtime.schema_fb
    try:
        return schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the flatbuffer decoder raises many kinds on a corrupt file
        raise ModelError(
            f"the TFLite model is truncated or corrupt ({type(exc).__name__}: {exc})",
            hint="run `mcu-ids quantize` again, or copy the file completely",
        ) from exc


def _schema():
    from tflite_micro.python.tflite_micro import runtime

    return runtime.schema_fb


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _builtin_name(op_code) -> str:
    names = _enum_names(_schema().BuiltinOperator)
    # Codes below 127 are also stored in the deprecated int8 field by older writers.
    code = max(int(op_code.builtinCode or 0), int(op_code.deprecatedBuiltinCode or 0))
    name = names.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        return f"CUSTOM:{_text(op_code.customCode)}"
    return name


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(np.asarray(value).reshape(-1))


def _read_tensor(index: int, raw, buffers: list, data: bytes) -> Tensor:
    type_names = _enum_names(_schema().TensorType)
    dtype = type_names.get(int(raw.type), f"TYPE_{raw.type}")
    shape = tuple(int(d) for d in _as_list(raw.shape))
    name = _text(raw.name)
    tensor = Tensor(
        index=index,
        name=name,
        shape=shape,
        dtype=dtype,
        quantization=_read_quantization(raw.quantization),
    )
    content = _buffer_bytes(raw.buffer, buffers, data, name)
    if content:
        tensor.data = _decode_constant(tensor, content)
    return tensor


def _read_quantization(raw) -> Quantization | None:
    if raw is None or raw.scale is None or len(raw.scale) == 0:
        return None
    scales = np.asarray(raw.scale, dtype=np.float32).reshape(-1)
    zero_points = np.asarray(
        raw.zeroPoint if raw.zeroPoint is not None else np.zeros(len(scales)), dtype=np.int64
    ).reshape(-1)
    if len(zero_points) == 1 and len(scales) > 1:
        zero_points = np.repeat(zero_points, len(scales))
    return Quantization(scales, zero_points, int(raw.quantizedDimension or 0))


def _buffer_bytes(buffer_index: int, buffers: list, data: bytes, tensor_name: str) -> bytes:
    if buffer_index is None or buffer_index <= 0:
        return b""
    if buffer_index >= len(buffers):
        raise ModelError(
            f"tensor {tensor_name!r} refers to buffer {buffer_index}, but the model has only "
            f"{len(buffers)} buffers",
            hint="the file is corrupt; write it again with `mcu-ids quantize`",
        )
    buffer = buffers[buffer_index]
    if buffer.data is not None and len(buffer.data) > 0:
        return np.asarray(buffer.data, dtype=np.uint8).tobytes()
    # Models over 2 GB keep buffers after the flatbuffer, addressed by offset and size.
    offset, size = int(buffer.offset or 0), int(buffer.size or 0)
    if offset > 1 and size > 0:
        if offset + size > len(data):
            raise ModelError(
                f"tensor {tensor_name!r} lies past the end of the file "
                f"(bytes {offset}..{offset + size} of {len(data)})",
                hint="the file is truncated; export or copy it again",
            )
        return data[offset : offset + size]
    return b""


def _decode_constant(tensor: Tensor, content: bytes) -> np.ndarray:
    dtype = _NUMPY_DTYPES.get(tensor.dtype)
    if dtype is None:
        return np.frombuffer(content, dtype=np.uint8).copy()
    expected = tensor.size * np.dtype(dtype).itemsize
    if len(content) != expected:
        raise ModelError(
            f"tensor {tensor.name!r} of shape {list(tensor.shape)} should hold {expected} bytes "
            f"of {tensor.dtype.lower()}, the file has {len(content)}",
            hint="the file is corrupt or truncated; write it again with `mcu-ids quantize`",
        )
    values = np.frombuffer(content, dtype=np.dtype(dtype).newbyteorder("<"))
    return values.astype(dtype).reshape(tensor.shape)


def _read_operator(index: int, raw, op_codes: list[str], tensors: list[Tensor]) -> Operator:
    if raw.opcodeIndex is None or not 0 <= raw.opcodeIndex < len(op_codes):
        raise ModelError(
            f"op {index} refers to op code {raw.opcodeIndex}, but the model has "
            f"{len(op_codes)} op codes",
            hint="the file is corrupt; write it again with `mcu-ids quantize`",
        )
    name = op_codes[raw.opcodeIndex]
    inputs = tuple(int(i) for i in _as_list(raw.inputs))
    outputs = tuple(int(i) for i in _as_list(raw.outputs))
    op = Operator(index=index, name=name, inputs=inputs, outputs=outputs)
    op.options = _read_options(op, raw.builtinOptions, tensors)
    return op


def _activation_name(code) -> str:
    return _enum_names(_schema().ActivationFunctionType).get(int(code or 0), f"ACT_{code}")


def _padding_name(code) -> str:
    return _enum_names(_schema().Padding).get(int(code or 0), f"PADDING_{code}")


def _read_options(op: Operator, raw, tensors: list[Tensor]) -> dict:
    """The options that matter to the generators, under snake_case names."""
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        options = {
            "padding": _padding_name(raw.padding),
            "stride_h": int(raw.strideH or 1),
            "stride_w": int(raw.strideW or 1),
            "dilation_h": int(raw.dilationHFactor or 1),
            "dilation_w": int(raw.dilationWFactor or 1),
            "activation": _activation_name(raw.fusedActivationFunction),
        }
        if op.name == "DEPTHWISE_CONV_2D":
            options["depth_multiplier"] = int(raw.depthMultiplier or 0)
        return options
    if op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return {
            "padding": _padding_name(raw.padding),
            "stride_h": int(raw.strideH or 1),
            "stride_w": int(raw.strideW or 1),
            "filter_h": int(raw.filterHeight or 1),
            "filter_w": int(raw.filterWidth or 1),
            "activation": _activation_name(raw.fusedActivationFunction),
        }
    if op.name == "FULLY_CONNECTED":
        return {
            "activation": _activation_name(raw.fusedActivationFunction if raw else 0),
            "keep_num_dims": bool(raw.keepNumDims) if raw else False,
            "weights_format": int(raw.weightsFormat or 0) if raw else 0,
        }
    if op.name == "SOFTMAX":
        return {"beta": float(np.float32(raw.beta)) if raw else 1.0}
    if op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        options = {"keep_dims": bool(raw.keepDims) if raw else False}
        if len(op.inputs) > 1 and 0 <= op.inputs[1] < len(tensors):
            axis_tensor = tensors[op.inputs[1]]
            if axis_tensor.data is not None:
                options["axes"] = tuple(int(a) for a in axis_tensor.data.reshape(-1))
        return options
    if raw is None:
        return {}
    # Other ops: keep their scalar options as-is so callers can still inspect them.
    return {
        _snake(key): value
        for key, value in vars(raw).items()
        if isinstance(value, (bool, int, float, str))
    }


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _check_references(model: TfliteModel) -> None:
    count = len(model.tensors)
    for op in model.operators:
        for index in op.inputs + op.outputs:
            if index >= count or index < -1:
                raise ModelError(
                    f"op {op.index} ({op.name}) refers to tensor {index}, but the model has "
                    f"{count} tensors",
                    hint="the file is corrupt; write it again with `mcu-ids quantize`",
                )
    for index in model.inputs + model.outputs:
        if not 0 <= index < count:
            raise ModelError(
                f"the graph's inputs or outputs refer to tensor {index}, but the model has "
                f"{count} tensors",
                hint="the file is corrupt; write it again with `mcu-ids quantize`",
            )


def _op_macs(model: TfliteModel, op: Operator) -> int:
    if op.name == "CONV_2D":
        filt = model.tensor(op.inputs[1])
        out = model.tensor(op.outputs[0])
        _, kernel_h, kernel_w, in_depth = filt.shape
        return out.size * kernel_h * kernel_w * in_depth
    if op.name == "DEPTHWISE_CONV_2D":
        filt = model.tensor(op.inputs[1])
        out = model.tensor(op.outputs[0])
        return out.size * filt.shape[1] * filt.shape[2]
    if op.name == "FULLY_CONNECTED":
        filt = model.tensor(op.inputs[1])
        out = model.tensor(op.outputs[0])
        return out.size * filt.shape[-1]
    return 0


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Split a real multiplier into a Q31 significand and a power-of-two shift, as TFLite does.

    Rounds half away from zero, moves a significand of exactly 2**31 into the shift, and flushes
    multipliers below 2**-31 to zero, so the integers match TFLite Micro's own.
    """
    if real_multiplier == 0.0:
        return 0, 0
    significand, shift = math.frexp(real_multiplier)
    fixed = _round_half_away(significand * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def _round_half_away(value: float) -> int:
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))
