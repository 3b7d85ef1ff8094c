"""Every script in benchmarks/ runs end to end at a small size and prints figures that hold up.

Nothing here checks a speed: these machines are shared and noisy. What is checked is what the
figures must satisfy whatever the load: a link cannot carry more than its capacity, counted
instructions are exact, a table has a row for every case.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
LOAD_METHODS = ("pandas", "pyarrow", "uncached", "cold", "cached")


def run_script(name: str, *args: str, timeout: int = 600) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_loading_benchmark_prints_a_row_per_method(tmp_path):
    out = run_script("bench_loading.py", "--rows", "1900", "--dir", str(tmp_path / "data"))
    table = {line.split()[0]: line.split() for line in out.splitlines()[4:]}
    assert tuple(table) == LOAD_METHODS
    assert "1,900 rows" in out
    assert table["pandas"][-3:] == ["1.00x", "1.00x", "-"]
    for method in LOAD_METHODS[1:]:
        wall, first_pass = float(table[method][1]), float(table[method][-1])
        assert wall > 0 and first_pass >= 0


@pytest.mark.slow
def test_link_benchmark_never_exceeds_the_line_capacity():
    out = run_script("bench_link.py", "--seconds", "1")
    cases = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)%$", out, re.M)
    assert [(int(baud), int(window)) for baud, window, *_ in cases] == [
        (115200, 1),
        (921600, 1),
        (115200, 32),
        (921600, 32),
    ]
    for baud, _, _, rows, rate, capacity, ratio in cases:
        assert int(capacity) == int(baud) // 10  # 8N1: ten bits on the line per byte
        assert int(rows) > 0
        # The pacing proxy lets through no more than the line would (1 % for the clock's edges).
        assert 0 < int(rate) <= int(capacity) * 1.01
        assert float(ratio) == pytest.approx(100 * int(rate) / int(capacity), abs=0.06)


@pytest.mark.slow
def test_training_benchmark_reports_rows_per_second():
    out = run_script(
        "bench_training.py", "--rows-per-class", "20", "--epochs", "1", "--batch", "32,64"
    )
    assert "synthetic data: 304 training rows" in out  # the train split of 19 x 20 rows
    rates = re.findall(r"^\s+(32|64)\s+(\d+)\s+([\d.]+)x$", out, re.M)
    assert [batch for batch, _, _ in rates] == ["32", "64"]
    assert rates[0][2] == "1.00" and all(int(rate) > 0 for _, rate, _ in rates)


@pytest.mark.slow
def test_published_table_script_runs_on_synthetic_rows_and_says_so(tmp_path):
    out = run_script(
        "reproduce_published_table.py", "--synthetic", "--epochs", "1", "--workdir", str(tmp_path)
    )
    assert out.startswith("*** SYNTHETIC DATA")
    metrics = re.findall(
        r"^(accuracy|weighted_f1|macro_f1)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M
    )
    assert [name for name, *_ in metrics] == ["accuracy", "weighted_f1", "macro_f1"]
    assert all(0 <= float(v) <= 1 for _, *values in metrics for v in values)
    recalls = re.findall(r"^\S+\s+60\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(recalls) == 19  # one row per class of the published table


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_engine_instruction_counts_are_exact_and_the_native_engine_does_less(sample_workspace):
    args = ("--workdir", str(sample_workspace.root), "--invokes", "40", "--tflm-invokes", "10")
    first, second = (run_script("bench_engine_instructions.py", *args) for _ in range(2))
    macs = int(re.search(r"model: (\d+) MACs per inference", first).group(1))
    native = re.search(r"^native \(generated C\)\s+(\d+)\s+([\d.]+)$", first, re.M)
    tflm = re.search(r"^TFLite Micro runtime\s+(\d+)\s+([\d.]+)$", first, re.M)
    assert macs > 1000
    assert float(native.group(2)) == pytest.approx(int(native.group(1)) / macs, abs=0.01)
    # A MAC costs at least one instruction; TFLM's kernels and interpreter cost more than the
    # generated loops.
    assert 1 < float(native.group(2)) < float(tflm.group(2))
    # callgrind counts instructions inside the call, not time: both figures repeat exactly.
    assert re.search(r"^native.*$", second, re.M).group(0) == native.group(0)
    assert re.search(r"^TFLite Micro.*$", second, re.M).group(0) == tflm.group(0)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc",
)
def test_qemu_instruction_figures_come_from_a_qemu_run(sample_workspace):
    from mcu_ids.devices import bench_device, build_firmware, flash_firmware, stop_device

    ws = sample_workspace
    build_firmware(ws, "qemu-f405")
    flash_firmware(ws, "qemu-f405")
    try:
        bench_device(ws, "qemu-f405", None, limit=30, progress=False)
    finally:
        stop_device(ws, "qemu-f405")
    out = run_script("bench_qemu_instructions.py", "--workdir", str(ws.root))
    per_tick = float(re.search(r"-> ([\d.]+) instructions per tick", out).group(1))
    assert per_tick == pytest.approx(1e9 / 168e6, rel=1e-3)  # -icount shift=0 under 168 MHz
    rows = re.findall(
        r"^(per-inference ticks|latency windows)\s+([\d.]+)\s+(\d+)\s+([\d.]+)", out, re.M
    )
    assert rows and rows[0][0] == "per-inference ticks"
    for _, ticks, instructions, per_mac in rows:
        assert int(instructions) == pytest.approx(float(ticks) * per_tick, abs=1)
        assert 2 < float(per_mac) < 50
