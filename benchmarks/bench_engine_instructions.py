"""Instructions per inference of the native C engine and of the TFLite Micro runtime, on the host.

Both are counted by ``valgrind --tool=callgrind`` (instructions executed, ``Ir``), collecting
only inside one function (``--toggle-collect``), so start-up and everything around the call count
nothing and the figure repeats exactly from run to run:

- native: a small C driver, compiled with the host board's flags, calls ``engine_invoke`` N
  times on one test row; the instructions inside ``engine_invoke``, divided by N.
- TFLM: a Python script runs the ``tflite_micro`` runtime (the reference the firmware is checked
  against) N times on the same row; the instructions inside
  ``tflite::micro::MicroInterpreter::Invoke()``, divided by N (the Python binding's call, input
  copy and output copy are outside it).

MACs per inference come from the model (``count_macs``). The model comes from ``--workdir``
(an `mcu-ids` workspace after `export`); without one, a small model is trained on synthetic data.

    python benchmarks/bench_engine_instructions.py [--workdir DIR] [--invokes 2000]
        [--tflm-invokes 200]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_INVOKES = 2000
TFLM_INVOKES = 200
_TOTAL = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)

DRIVER_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "engine.h"
#include "model_config.h"

static const int8_t row[MCU_IDS_N_FEATURES] = { %(row)s };

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    int8_t out[MCU_IDS_N_CLASSES];
    int sum = 0;
    if (engine_init() != 0) {
        return 2;
    }
    for (long i = 0; i < n; i++) {
        if (engine_invoke(row, out) != 0) {
            return 3;
        }
        sum += out[0];
    }
    printf("%%d\n", sum);
    return 0;
}
"""

TFLM_SCRIPT = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
row = np.load(sys.argv[2])
n, invoke = int(sys.argv[3]), sys.argv[4] == "1"
interpreter = runtime.Interpreter.from_bytes(model, arena_size=%(arena)d)
for _ in range(n):
    interpreter.set_input(row, 0)
    if invoke:
        interpreter.invoke()
    interpreter.get_output(0)
"""


NATIVE_FUNCTION = "engine_invoke"
TFLM_FUNCTION = "tflite::micro::MicroInterpreter::Invoke()"


def callgrind_total(command: list[str], out_dir: Path, tag: str, function: str) -> int:
    """Instructions executed inside ``function`` (and what it calls) while ``command`` runs."""
    out_file = out_dir / f"callgrind.{tag}.out"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            f"--toggle-collect={function}",
            *command,
        ],
        check=True,
        capture_output=True,
    )
    match = _TOTAL.search(out_file.read_text(errors="replace"))
    if not match or int(match.group(1)) == 0:
        raise RuntimeError(f"callgrind counted nothing inside {function} ({out_file})")
    return int(match.group(1))


def prepare_workspace(root: Path) -> Path:
    """A workspace with a small model trained on synthetic data, exported."""
    from mcu_ids.model.train import TrainSettings
    from mcu_ids.pipeline import export, prepare_data, quantize, train
    from mcu_ids.workspace import Workspace

    ws = Workspace(root)
    prepare_data(ws, None, synthetic_rows=200, progress=False)
    train(ws, TrainSettings(epochs=3), (16, 32), progress=False)
    quantize(ws, calibration_rows=200, progress=False)
    export(ws, progress=False)
    return root


def native_instructions(workdir: Path, row: np.ndarray, invokes: int, tmp: Path) -> float:
    """Callgrind instructions per ``engine_invoke`` of the generated native engine."""
    from mcu_ids.build.host import HOST_CFLAGS
    from mcu_ids.resources import asset_dir

    driver = tmp / "driver.c"
    driver.write_text(DRIVER_C % {"row": ", ".join(str(int(v)) for v in row)})
    binary = tmp / "native-driver"
    export = workdir / "export"
    subprocess.run(
        [
            "gcc",
            *HOST_CFLAGS,
            f"-I{asset_dir('firmware')}",
            f"-I{export}",
            str(driver),
            str(export / "engine_native.c"),
            "-o",
            str(binary),
        ],
        check=True,
    )
    return callgrind_total([str(binary), str(invokes)], tmp, "native", NATIVE_FUNCTION) / invokes


def tflm_instructions(workdir: Path, row: np.ndarray, invokes: int, tmp: Path) -> float:
    """Callgrind instructions per ``invoke()`` of the TFLite Micro Python runtime."""
    import json

    arena = json.loads((workdir / "export" / "manifest.json").read_text())["tflm_arena"]
    arena_bytes = int(arena.get("arena_bytes") or arena.get("recommended_bytes") or 16384)
    script = tmp / "tflm_loop.py"
    script.write_text(TFLM_SCRIPT % {"arena": max(arena_bytes, 4096) * 2})
    row_file = tmp / "row.npy"
    np.save(row_file, row.reshape(1, -1).astype(np.int8))
    model = str(workdir / "model" / "model_int8.tflite")
    command = [sys.executable, str(script), model, str(row_file), str(invokes), "1"]
    return callgrind_total(command, tmp, "tflm", TFLM_FUNCTION) / invokes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--invokes", type=int, default=DEFAULT_INVOKES, help="calls of the native engine"
    )
    parser.add_argument(
        "--tflm-invokes", type=int, default=TFLM_INVOKES, help="calls of the TFLM runtime"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    from mcu_ids.export.tflite_model import count_macs, load_tflite

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        workdir = args.workdir or prepare_workspace(tmp / "ws")
        with np.load(workdir / "model" / "reference.npz") as ref:
            row = ref["inputs"][0]
        model = load_tflite((workdir / "model" / "model_int8.tflite").read_bytes())
        macs = sum(op[2] for op in count_macs(model))
        native = native_instructions(workdir, row, args.invokes, tmp)
        tflm = tflm_instructions(workdir, row, args.tflm_invokes, tmp)
    print(f"model: {macs} MACs per inference; host x86-64, gcc -O2, callgrind Ir inside the call")
    print(f"{'engine':<28} {'instructions':>13} {'per MAC':>9}")
    print(f"{'native (generated C)':<28} {native:>13.0f} {native / macs:>9.2f}")
    print(f"{'TFLite Micro runtime':<28} {tflm:>13.0f} {tflm / macs:>9.2f}")
    print(f"TFLM / native: {tflm / native:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
