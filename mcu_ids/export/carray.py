"""The .tflite model as a C array: ``model_data.c`` and ``model_data.h``."""

import re
from pathlib import Path

from mcu_ids.build.render import render_template
from mcu_ids.errors import ModelError

# TFLite Micro reads weights in place from the array; 16 bytes covers every SIMD load it does.
MODEL_ALIGNMENT = 16
ARRAY_NAME = "mcu_ids_model"
LENGTH_NAME = "mcu_ids_model_len"

_ARRAY_BODY = re.compile(ARRAY_NAME + r"\s*\[\s*\][^=]*=\s*\{(?P<body>[^}]*)\}", re.S)
_LENGTH_VALUE = re.compile(LENGTH_NAME + r"\s*=\s*(?P<value>\d+)[uU]?\s*;")


def write_model_array(tflite_bytes: bytes, out_dir: Path, source_hash: str) -> list[Path]:
    """Render ``model_data.c`` and ``model_data.h`` holding the model, 16-byte aligned."""
    if not tflite_bytes:
        raise ModelError("the .tflite model is empty", hint="re-run the quantize step")
    out_dir = Path(out_dir)
    context = {"model": tflite_bytes, "length": len(tflite_bytes), "alignment": MODEL_ALIGNMENT}
    return [
        render_template(f"tflm/{name}.j2", out_dir / name, context, source_hash)
        for name in ("model_data.h", "model_data.c")
    ]


def parse_c_array(text: str) -> bytes:
    """Read the model bytes back from the text of ``model_data.c``.

    Checks that every element is a byte literal and that the declared length matches, so a
    truncated or hand-edited file is caught rather than silently accepted.
    """
    match = _ARRAY_BODY.search(text)
    if match is None:
        raise ModelError(f"no initialised array '{ARRAY_NAME}[]' found in the C source")
    tokens = [token.strip() for token in match["body"].split(",") if token.strip()]
    try:
        values = [int(token, 0) for token in tokens]
    except ValueError as exc:
        raise ModelError(f"the array '{ARRAY_NAME}' holds a non-integer element: {exc}") from exc
    bad = [value for value in values if not 0 <= value <= 0xFF]
    if bad:
        raise ModelError(f"the array '{ARRAY_NAME}' holds {bad[0]}, not a byte (0..255)")
    data = bytes(values)
    length = _LENGTH_VALUE.search(text)
    if length is not None and int(length["value"]) != len(data):
        raise ModelError(
            f"'{LENGTH_NAME}' says {length['value']} bytes but the array has {len(data)}",
            hint="regenerate the model sources with `mcu-ids build`",
        )
    return data
