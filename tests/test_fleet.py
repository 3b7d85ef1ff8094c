"""Fleets: several host devices with the same firmware share the rows of one benchmark run.

The devices run the test fixture engine (tests/c/engine_fixture.c); expected outputs are
computed here from the fixture's definition.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.devices import BUILD_INFO, device_ports, flash_firmware, stop_device
from mcu_ids.errors import BoardError, McuIdsError
from mcu_ids.hil.fleet import FLEET_FILE, run_fleet, shard_rows
from mcu_ids.hil.report import load_results
from mcu_ids.resources import asset_dir
from mcu_ids.workspace import Workspace

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TESTS_C = Path(__file__).parent / "c"
FIXTURE_MIX = 37
ROWS = 240


def _config() -> dict:
    values = dict(
        re.findall(r"#define (MCU_IDS_\w+) (.+)", (TESTS_C / "model_config.h").read_text())
    )
    return {
        "n_features": int(values["MCU_IDS_N_FEATURES"]),
        "n_classes": int(values["MCU_IDS_N_CLASSES"]),
        "sha256": values["MCU_IDS_MODEL_SHA256"].strip('"'),
    }


CONFIG = _config()


def fixture_outputs(inputs: np.ndarray) -> np.ndarray:
    """output[i] = input[i % F] XOR (i * 37), bytewise (the fixture's definition)."""
    index = np.arange(CONFIG["n_classes"])
    mix = ((index * FIXTURE_MIX) & 0xFF).astype(np.uint8)
    return (inputs[:, index % CONFIG["n_features"]].view(np.uint8) ^ mix).view(np.int8)


def make_inputs(rows: int) -> np.ndarray:
    inputs = np.random.default_rng(5).integers(-128, 128, (rows, CONFIG["n_features"]), np.int8)
    inputs[:, 0] = np.minimum(inputs[:, 0], 126)  # clear of the fixture's failure trigger
    return inputs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace whose host build is the fixture firmware, as `mcu-ids build` records it."""
    ws = Workspace(tmp_path_factory.mktemp("fleet-ws"))
    build = ws.build_dir("host")
    build.mkdir(parents=True)
    binary = build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        build / "mcu-ids-firmware",
        {"MCU_IDS_RX_BUFFER_BYTES": 4096},
    )
    (build / BUILD_INFO).write_text(json.dumps({"artifact": str(binary), "engine": "native"}))
    return ws


@pytest.fixture
def two_devices(workspace):
    started = flash_firmware(workspace, "host", count=2)
    yield started
    stop_device(workspace, "host")


def test_rows_are_dealt_out_in_turn():
    assert shard_rows(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard_rows([4, 9], 3) == [[4], [9], []]


def test_flash_count_starts_and_records_each_device(workspace, two_devices):
    ports = device_ports(workspace, get_board("host"), None)
    assert ports == two_devices["ports"] and len(set(ports)) == 2
    assert two_devices["port"] == ports[0]
    stopped = stop_device(workspace, "host")
    assert stopped == {"board": "host", "stopped": True, "devices": 2}
    assert not list((workspace.root / "devices").glob("host*.json"))


def test_count_above_one_is_refused_for_a_real_board(workspace):
    build = workspace.build_dir("nucleo-f446re")
    build.mkdir(parents=True, exist_ok=True)
    (build / BUILD_INFO).write_text(json.dumps({"artifact": "firmware.elf", "engine": "native"}))
    with pytest.raises(BoardError, match="only emulated boards"):
        flash_firmware(workspace, "nucleo-f446re", count=2)


def test_two_devices_answer_every_row_once_and_identically(two_devices, tmp_path):
    inputs = make_inputs(ROWS)
    expected = fixture_outputs(inputs)
    result = run_fleet(
        two_devices["ports"],
        inputs,
        np.arange(ROWS) % CONFIG["n_classes"],
        expected,
        expected_model_sha256=CONFIG["sha256"],
        class_names=[f"class{i}" for i in range(CONFIG["n_classes"])],
        out_dir=tmp_path,
        progress=False,
        sample_ids=np.arange(5000, 5000 + ROWS),
    )
    assert result.complete
    records = load_results(tmp_path)
    assert sorted(r["index"] for r in records) == list(range(ROWS))
    assert sorted(r["sample"] for r in records) == list(range(5000, 5000 + ROWS))
    by_index = {r["index"]: r for r in records}
    outputs = np.array([by_index[i]["output"] for i in range(ROWS)], dtype=np.int8)
    assert np.array_equal(outputs, expected)
    ports = {r["port"] for r in records}
    assert ports == set(two_devices["ports"])
    # Row i went to device i mod 2, and each record names the boot id of its device.
    for record in records:
        assert record["port"] == two_devices["ports"][record["index"] % 2]
    assert len({r["boot_id"] for r in records}) == 2
    assert result.report["agreement"]["identical_outputs_pct"] == 100.0
    fleet = result.report["meta"]["fleet"]
    assert [d["rows_answered"] for d in fleet] == [ROWS // 2, ROWS // 2]
    assert json.loads((tmp_path / FLEET_FILE).read_text())["ports"] == two_devices["ports"]


def test_a_port_given_twice_is_refused(two_devices, tmp_path):
    port = two_devices["ports"][0]
    with pytest.raises(McuIdsError, match="more than once"):
        run_fleet(
            [port, port],
            make_inputs(4),
            np.zeros(4),
            fixture_outputs(make_inputs(4)),
            expected_model_sha256=CONFIG["sha256"],
            class_names=["a"],
            out_dir=tmp_path,
            progress=False,
        )
