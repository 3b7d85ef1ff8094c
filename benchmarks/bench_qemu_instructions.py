"""Instructions per inference and per MAC of the native engine on the emulated STM32F405.

QEMU runs the firmware with ``-icount shift=0``: one guest instruction per virtual nanosecond,
so the emulated clock counts instructions. The firmware times each inference with SysTick,
which QEMU drives at the board's 168 MHz in that same virtual time. One tick is therefore
1e9 / 2**shift / 168e6 = 5.95 instructions, and

    instructions per inference = ticks x 1e9 / (2**shift x tick_hz).

The conversion reads the shift from the board file (``[qemu] icount_shift``) and the tick rate
from the device handshake. Figures come from the newest qemu-f405 run in ``--workdir``; with
``--run`` (or when there is none) the script runs ``mcu-ids run --board qemu-f405`` first.
When a run records latency windows (warm-up, then timed windows of several inferences), those
are used as well; otherwise the per-inference ticks of the run.

    python benchmarks/bench_qemu_instructions.py [--workdir DIR] [--run] [--data FOLDER]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BOARD = "qemu-f405"
DEFAULT_LIMIT = 300


def newest_run(workdir: Path) -> Path | None:
    """The newest qemu-f405 run folder that holds a report."""
    runs = sorted((workdir / "runs").glob(f"*-{BOARD}*"))
    runs = [run for run in runs if (run / "report.json").exists()]
    return runs[-1] if runs else None


def run_chain(workdir: Path, data: Path | None, limit: int) -> None:
    """Train, build and benchmark on the emulated board (synthetic data unless ``data``)."""
    command = [sys.executable, "-m", "mcu_ids", "--workdir", str(workdir), "-q", "run"]
    command += ["--board", BOARD, "--limit", str(limit), "--epochs", "5"]
    if data:
        command += ["--data", str(data)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def window_ticks(report: dict) -> list[float]:
    """Ticks per inference from the run's latency windows, if it recorded any."""
    windows = report.get("latency", {}).get("windows") or report["meta"].get("latency_windows")
    if isinstance(windows, dict):
        windows = windows.get("windows", [])
    per_inference = []
    for window in windows or []:
        if isinstance(window, dict) and window.get("ticks_per_inference"):
            per_inference.append(window["ticks_per_inference"])
    return per_inference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--run", action="store_true", help="benchmark again before measuring")
    parser.add_argument("--data", type=Path, default=None, help="dataset for --run")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    args = parser.parse_args(argv)
    from mcu_ids.export.tflite_model import count_macs, load_tflite
    from mcu_ids.hil.html_report import work_per_tick
    from mcu_ids.hil.report import load_results

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        if args.run or newest_run(workdir) is None:
            run_chain(workdir, args.data, args.limit)
        run = newest_run(workdir)
        report = json.loads((run / "report.json").read_text())
        ticks = np.array([r["ticks"] for r in load_results(run)], dtype=np.float64)
        model = load_tflite((workdir / "model" / "model_int8.tflite").read_bytes())
    hello = report["handshake"]
    factor, unit = work_per_tick(hello["tick_kind"], hello["tick_hz"], BOARD)
    macs = count_macs(model)
    total_macs = sum(op[2] for op in macs)
    print(
        f"run {run.name}: {len(ticks)} inferences, tick kind {hello['tick_kind']} at "
        f"{hello['tick_hz']} Hz -> {factor:.4f} {unit} per tick"
    )
    selected = report.get("meta", {}).get("rows_selected")
    if selected and len(ticks) < selected:
        print(f"note: the run is incomplete ({len(ticks)} of {selected} rows answered)")
    print(
        f"model: {total_macs} MACs per inference ({', '.join(f'{n} {m}' for _, n, m in macs if m)})"
    )
    rows = [("per-inference ticks", ticks)]
    windowed = window_ticks(report)
    if windowed:
        rows.append(("latency windows", np.array(windowed)))
    print(f"{'source':<22} {'ticks':>10} {unit:>13} {unit + '/MAC':>17} {'spread':>8}")
    for name, values in rows:
        median = float(np.median(values))
        spread = (values.max() - values.min()) / median if median else 0.0
        print(
            f"{name:<22} {median:>10.1f} {median * factor:>13.0f} "
            f"{median * factor / total_macs:>17.2f} {spread:>7.2%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
