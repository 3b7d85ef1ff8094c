"""Pipelining: several INFER requests in flight, bounded by the device's receive buffer."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.flash.host import start_host_device, stop_host_device
from mcu_ids.hil import protocol
from mcu_ids.hil.faults import FaultProxy, baud_bytes_per_s
from mcu_ids.hil.harness import MAX_WINDOW, pipeline_window, stream_rows
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TESTS_C = Path(__file__).parent / "c"
N_FEATURES = 40
N_CLASSES = 19
INFER_FRAME_BYTES = protocol.HEADER_SIZE + N_FEATURES + protocol.CRC_SIZE
RX_BUFFER_BYTES = 300


def fixture_outputs(inputs: np.ndarray) -> np.ndarray:
    """output[i] = input[i % F] XOR (i * 37), bytewise: the fixture engine's definition."""
    index = np.arange(N_CLASSES)
    mix = ((index * 37) & 0xFF).astype(np.uint8)
    return (inputs[:, index % N_FEATURES].view(np.uint8) ^ mix).view(np.int8)


@pytest.fixture(scope="module", params=[0, RX_BUFFER_BYTES])
def device(request, tmp_path_factory):
    binary = build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        tmp_path_factory.mktemp("host") / "mcu-ids-host",
        {"MCU_IDS_RX_BUFFER_BYTES": request.param},
    )
    started = start_host_device(binary)
    yield request.param, started
    stop_host_device(started)


def test_the_window_fits_the_receive_buffer_the_device_states(device):
    rx_buffer, started = device
    with protocol.open_link(started.port) as link:
        hello = link.hello()
    assert hello.rx_buffer_bytes == rx_buffer
    window = pipeline_window(hello, N_FEATURES)
    assert window == max(1, min(MAX_WINDOW, rx_buffer // INFER_FRAME_BYTES))
    assert window * INFER_FRAME_BYTES <= max(rx_buffer, INFER_FRAME_BYTES)


def test_rows_stay_in_flight_on_a_paced_link_and_all_come_back_right(device):
    rx_buffer, started = device
    inputs = np.random.default_rng(2).integers(-100, 100, (200, N_FEATURES), dtype=np.int8)
    with FaultProxy(started.port, bytes_per_s=baud_bytes_per_s(921600)) as proxy:
        with protocol.open_link(proxy.port) as link:
            outcomes, stats = stream_rows(link, link.hello(), inputs)
    expected = fixture_outputs(inputs)
    assert sorted(outcome.index for outcome in outcomes) == list(range(200))
    for outcome in outcomes:
        assert np.array_equal(outcome.result.output_int8(), expected[outcome.index])
    assert stats["retries"] == 0
    if rx_buffer:
        assert stats["max_outstanding"] == rx_buffer // INFER_FRAME_BYTES > 1
    else:
        assert stats["max_outstanding"] == 1
