"""The whole chain: model -> firmware -> device -> serial benchmark -> report."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from headless import CHROMIUM, chromium_command

from mcu_ids.devices import bench_device, build_firmware, flash_firmware, stop_device

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc",
)


def latest_report(ws) -> dict:
    run = sorted(ws.runs_dir.iterdir())[-1]
    return json.loads((run / "report.json").read_text(encoding="utf-8")), run


def bench_once(ws, board: str, limit: int | None = None) -> tuple[dict, object]:
    flash_firmware(ws, board)
    try:
        bench_device(ws, board, None, limit=limit, progress=False)
    finally:
        stop_device(ws, board)
    return latest_report(ws)


@pytest.mark.slow
def test_host_board_scores_every_test_row_identically_to_tflm(sample_workspace):
    ws = sample_workspace
    build_firmware(ws, "host")
    report, run = bench_once(ws, "host")
    with np.load(ws.reference) as ref:
        rows = len(ref["labels"])
        host_pred = np.argmax(ref["outputs"].astype(np.int16), axis=1)
        host_accuracy = float(np.mean(host_pred == ref["labels"]))
    assert report["agreement"]["rows"] == rows
    assert report["agreement"]["identical_outputs"] == rows
    assert report["device_metrics"]["accuracy"] == pytest.approx(host_accuracy)
    assert report["meta"]["data"] == "real CICIoMT2024 rows"
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in records] == list(range(rows))
    assert all(r["shift_score"] == r["reference_shift_score"] for r in records)


@pytest.mark.slow
@pytest.mark.emulation
@needs_qemu
def test_qemu_f405_is_exact_and_its_latency_repeats(sample_workspace):
    ws = sample_workspace
    build_firmware(ws, "qemu-f405")
    first, first_run = bench_once(ws, "qemu-f405", limit=150)
    second, second_run = bench_once(ws, "qemu-f405", limit=150)
    for report in (first, second):
        assert report["agreement"]["identical_outputs_pct"] == 100.0
        assert report["latency"]["device"]["tick_kind"] == "emulated-instructions"
    # SysTick (168 MHz) is sampled from an instruction clock, so one row may land a tick apart,
    # and the link's once-a-second boot-id probe can add a few ticks to the row it interrupts;
    # the figures a report prints are the same in both runs.
    for key in ("median", "p90"):
        assert first["latency"]["device"]["ticks"][key] == second["latency"]["device"]["ticks"][key]
    ticks = [
        np.array([json.loads(line)["ticks"] for line in (run / "results.jsonl").open()])
        for run in (first_run, second_run)
    ]
    assert np.mean(np.abs(ticks[0] - ticks[1]) <= 1) >= 0.95
    windows = [report["meta"]["latency_windows"]["window_ticks"] for report in (first, second)]
    assert np.abs(np.array(windows[0]) - np.array(windows[1])).max() <= 1
    check_html_report_renders(second_run)


def check_html_report_renders(run_dir) -> None:
    """The emulated board's report shows its emulated latency, per-layer cost, estimated energy
    and memory, with its plots, in a real browser."""
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    for heading in ("Latency", "Per-layer cost", "Energy per inference", "Memory"):
        assert heading in html, heading
    assert "ESTIMATED" in html and "emulated" in html
    if CHROMIUM is None:
        return
    # The browser profile must not land in the runs folder, which other tests list.
    profile = Path(tempfile.mkdtemp(prefix="mcu-ids-chromium-"))
    dom = subprocess.run(
        [
            *chromium_command(profile),
            "--dump-dom",
            (run_dir / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    shutil.rmtree(profile, ignore_errors=True)
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', dom)
    # latency histogram, per-layer bars, confusion matrix, per-class F1
    assert len(images) >= 4
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)


@pytest.mark.slow
@pytest.mark.emulation
@needs_qemu
def test_the_readme_main_job_runs_on_synthetic_data(tmp_path):
    env = {**os.environ, "MCU_IDS_CACHE": str(tmp_path / "cache")}
    command = [
        sys.executable,
        "-m",
        "mcu_ids",
        "-q",
        "--workdir",
        str(tmp_path / "out"),
        "run",
        "--epochs",
        "3",
        "--limit",
        "120",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "identical int8 outputs: 120 of 120 (100.00 %)" in done.stdout
    report = json.loads(next((tmp_path / "out" / "runs").glob("*/report.json")).read_text())
    assert report["meta"]["board"] == "qemu-f405"
    assert report["meta"]["data"].startswith("synthetic")


def run_command(workdir, *args) -> dict:
    env = {**os.environ, "MCU_IDS_CACHE": str(workdir / "cache")}
    command = [sys.executable, "-m", "mcu_ids", "-q", "--workdir", str(workdir), "run", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(next((workdir / "runs").glob("*/report.json")).read_text())


@pytest.mark.slow
def test_run_on_the_host_board_with_the_real_sample(tmp_path, sample_dir):
    report = run_command(tmp_path, "--board", "host", "--data", str(sample_dir))
    assert report["agreement"]["identical_outputs_pct"] == 100.0
    assert report["agreement"]["rows"] == report["meta"]["rows_available"] > 700


@pytest.mark.slow
@pytest.mark.emulation
@needs_qemu
def test_run_on_qemu_f405_twice_gives_the_same_figures(tmp_path, sample_dir):
    first = run_command(tmp_path / "a", "--board", "qemu-f405", "--data", str(sample_dir))
    second = run_command(tmp_path / "b", "--board", "qemu-f405", "--data", str(sample_dir))
    assert first["meta"]["model_sha256"] == second["meta"]["model_sha256"]
    for report in (first, second):
        assert report["agreement"]["identical_outputs_pct"] == 100.0
    ticks = [report["latency"]["device"]["ticks"] for report in (first, second)]
    # Per-row ticks are SysTick read at an instruction boundary (+/-1) and rows can be hit by a
    # receive interrupt whose virtual arrival depends on the host; the medians agree within one.
    assert abs(ticks[0]["median"] - ticks[1]["median"]) <= 1
    windows = [report["meta"]["latency_windows"]["window_ticks"] for report in (first, second)]
    assert np.abs(np.array(windows[0]) - np.array(windows[1])).max() <= 1
