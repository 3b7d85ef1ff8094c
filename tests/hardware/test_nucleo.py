"""A real Nucleo board on --port (with --board naming it): flash, handshake, timing.

Skipped unless pytest is given --port. The board must be connected through its ST-LINK.
"""

import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.build.stm32 import build_stm32_project, render_stm32_project
from mcu_ids.flash.pyocd_flasher import flash_stm32
from mcu_ids.hil import protocol

pytestmark = pytest.mark.hardware
LINK_CHECK_TIME = b"\xf0"
READ_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def port(request):
    try:
        value = request.config.getoption("--port", default=None)
    except ValueError:
        value = None
    if not value:
        pytest.skip("needs a board: pass --port")
    return value


@pytest.fixture(scope="module")
def board(request):
    try:
        name = request.config.getoption("--board", default=None)
    except ValueError:
        name = None
    return get_board(name or "nucleo-f446re")


@pytest.fixture(scope="module")
def flashed_link_check(port, board, tmp_path_factory):
    project = render_stm32_project(
        board, "native", None, tmp_path_factory.mktemp("nucleo"), "0" * 64, app="link-check"
    )
    result = build_stm32_project(project)
    flash_stm32(result.elf, board)
    return result


def test_serial_echo_and_cycle_counter(flashed_link_check, port, board):
    with protocol.open_serial(port, board.baud) as handle:
        handle.timeout = READ_TIMEOUT_S
        message = bytes(range(32, 127)) * 4
        handle.write(message)
        assert handle.read(len(message)) == message
        handle.write(LINK_CHECK_TIME)
        reply = handle.read(8)
    ticks = int.from_bytes(reply[:4], "little")
    tick_hz = int.from_bytes(reply[4:], "little")
    assert tick_hz == board.clock_hz
    # 20000 rounds of a 5-instruction loop: 100k cycles or more, well under 10 ms at any clock.
    assert 100_000 <= ticks < board.clock_hz // 100
