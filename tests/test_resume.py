"""Resuming an interrupted benchmark: a killed harness, then `resume`, gives every row once."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.errors import McuIdsError
from mcu_ids.flash.host import start_host_device, stop_host_device
from mcu_ids.hil.harness import RUN_FILE, run_benchmark
from mcu_ids.hil.report import load_results
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TESTS_C = Path(__file__).parent / "c"
REPO_ROOT = Path(__file__).resolve().parent.parent
N_FEATURES = 40
N_CLASSES = 19
MODEL_SHA256 = "d85ae7ed3aeb0573e32689269680d763a217f20a6d5f62cc1026288c87415572"
CLASS_NAMES = [f"class{i}" for i in range(N_CLASSES)]
ROWS = 20_000
KILL_AFTER_ROWS = 500
# Fields of a record that depend on the device's answer, not on timing.
ANSWER_FIELDS = ("index", "sample", "label", "output", "predicted", "identical", "shift_score")

CHILD = """
import sys
import numpy as np
from mcu_ids.hil.harness import run_benchmark
data = np.load(sys.argv[2])
run_benchmark(sys.argv[1], data["inputs"], data["labels"], data["expected"],
              expected_model_sha256=sys.argv[3], class_names=sys.argv[4].split(","),
              out_dir=sys.argv[5], progress=False, sample_ids=data["ids"])
"""


def fixture_outputs(inputs: np.ndarray) -> np.ndarray:
    """output[i] = input[i % F] XOR (i * 37), bytewise: the fixture engine's definition."""
    index = np.arange(N_CLASSES)
    mix = ((index * 37) & 0xFF).astype(np.uint8)
    return (inputs[:, index % N_FEATURES].view(np.uint8) ^ mix).view(np.int8)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    binary = build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        tmp_path_factory.mktemp("host") / "mcu-ids-host",
        {"MCU_IDS_RX_BUFFER_BYTES": 4096},
    )
    started = start_host_device(binary)
    yield started
    stop_host_device(started)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    inputs = rng.integers(-128, 128, (ROWS, N_FEATURES), dtype=np.int8)
    inputs[:, 0] = np.minimum(inputs[:, 0], 126)
    return {
        "inputs": inputs,
        "labels": rng.integers(0, N_CLASSES, ROWS),
        "expected": fixture_outputs(inputs),
        "ids": np.arange(ROWS) * 3 + 7,
    }


def bench(port, data, out_dir, **options):
    return run_benchmark(
        port,
        data["inputs"],
        data["labels"],
        data["expected"],
        expected_model_sha256=MODEL_SHA256,
        class_names=CLASS_NAMES,
        out_dir=out_dir,
        progress=False,
        sample_ids=data["ids"],
        **options,
    )


def kill_midway(port, data, tmp_path) -> Path:
    """Start a benchmark in a child process and SIGKILL it once some rows are in."""
    npz = tmp_path / "data.npz"
    np.savez(npz, **data)
    out_dir = tmp_path / "run"
    command = [sys.executable, "-c", CHILD, port, str(npz), MODEL_SHA256]
    command += [",".join(CLASS_NAMES), str(out_dir)]
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    child = subprocess.Popen(
        command, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path}
    )
    results = out_dir / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= KILL_AFTER_ROWS:
            break
        assert child.poll() is None, child.stderr.read().decode()
        time.sleep(0.005)
    child.kill()
    child.communicate(timeout=30)
    return out_dir


def answers(rows):
    return sorted(
        (tuple(json.dumps(row[key]) for key in ANSWER_FIELDS) for row in rows),
    )


@pytest.mark.slow
def test_a_killed_run_resumes_to_every_row_exactly_once(device, data, tmp_path):
    out_dir = kill_midway(device.port, data, tmp_path)
    kept = load_results(out_dir)
    assert KILL_AFTER_ROWS <= len(kept) < ROWS
    # A write cut short by the kill, whether or not this one was: resume must cope.
    with open(out_dir / "results.jsonl", "ab") as handle:
        handle.write(b'{"index": 12, "sample": 4')

    resumed = bench(device.port, data, out_dir, resume=True)
    assert resumed.complete
    assert resumed.report["meta"]["resumed_rows"] == len(kept)
    rows = load_results(out_dir)
    assert sorted(row["index"] for row in rows) == list(range(ROWS))

    straight = bench(device.port, data, tmp_path / "straight")
    assert answers(rows) == answers(load_results(tmp_path / "straight"))
    assert resumed.report["agreement"] == straight.report["agreement"]


def test_resume_refuses_another_selection_or_model(device, data, tmp_path):
    small = {key: value[:50] for key, value in data.items()}
    bench(device.port, small, tmp_path)
    plan = json.loads((tmp_path / RUN_FILE).read_text())
    assert plan["sample_ids"] == small["ids"].tolist()

    other = {**small, "ids": small["ids"] + 1}
    with pytest.raises(McuIdsError, match="selected samples"):
        bench(device.port, other, tmp_path, resume=True)
    with pytest.raises(McuIdsError, match="model_sha256"):
        run_benchmark(
            device.port,
            small["inputs"],
            small["labels"],
            small["expected"],
            expected_model_sha256="0" * 64,
            class_names=CLASS_NAMES,
            out_dir=tmp_path,
            progress=False,
            sample_ids=small["ids"],
            resume=True,
        )
    with pytest.raises(McuIdsError, match="no run.json"):
        bench(device.port, small, tmp_path / "empty", resume=True)

    # A resume of a finished run sends nothing and keeps the rows.
    again = bench(device.port, small, tmp_path, resume=True)
    assert again.complete and again.link_stats["max_outstanding"] == 0
    assert len(load_results(tmp_path)) == 50
