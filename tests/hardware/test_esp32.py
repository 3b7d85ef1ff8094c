"""Real ESP32 / ESP32-S3 boards: run only with --port (and --board esp32 or esp32s3).

The flashing test also needs a built ESP-IDF project: set MCU_IDS_ESP_PROJECT to its folder.
"""

import os
from pathlib import Path

import pytest

from mcu_ids.build.boards import get_board

pytestmark = pytest.mark.hardware

PROJECT_ENV = "MCU_IDS_ESP_PROJECT"
ESP_BOARDS = ("esp32", "esp32s3")


@pytest.fixture
def port(request) -> str:
    value = request.config.getoption("--port", default=None)
    if not value:
        pytest.skip("give --port to run hardware tests")
    return value


@pytest.fixture
def board(request):
    name = request.config.getoption("--board", default=None) or "esp32"
    if name not in ESP_BOARDS:
        pytest.skip(f"--board {name} is not an ESP32 board")
    return get_board(name)


def test_bootloader_reports_the_board_chip(port, board):
    esptool_cmds = pytest.importorskip("esptool.cmds")
    with esptool_cmds.detect_chip(port, 115200, "default-reset", connect_attempts=3) as esp:
        assert esp.CHIP_NAME == board.chip
        esptool_cmds.reset_chip(esp, "hard-reset")


def test_flash_and_boot_from_flash(port, board):
    from mcu_ids.flash.esptool_flasher import flash_esp32

    project = os.environ.get(PROJECT_ENV)
    if not project:
        pytest.skip(f"set {PROJECT_ENV} to a built ESP-IDF project folder")
    # Raises FlashError if writing fails or the board stays in download mode.
    flash_esp32(board, Path(project), port)
