"""Flashing STM32 boards: the refusals that can be checked without a board attached."""

import importlib.util

import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.errors import FlashError
from mcu_ids.flash import pyocd_flasher


def test_wrong_chip_is_refused_before_writing():
    board = get_board("nucleo-f446re")
    pyocd_flasher.check_device_id(board, 0x10006421)  # revision bits are ignored
    with pytest.raises(FlashError) as info:
        pyocd_flasher.check_device_id(board, 0x10006470)  # an STM32L4R5
    assert "0x470" in info.value.message and "0x421" in info.value.message


def test_missing_image_is_refused(tmp_path):
    with pytest.raises(FlashError, match="does not exist"):
        pyocd_flasher.flash_stm32(tmp_path / "none.elf", get_board("nucleo-f446re"))


def test_no_tool_names_pyocd(tmp_path, monkeypatch):
    image = tmp_path / "fw.elf"
    image.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "pyocd", None)  # as if not installed
    with pytest.raises(FlashError) as info:
        pyocd_flasher.flash_stm32(image, get_board("nucleo-f446re"))
    assert info.value.hint == "pip install pyocd"


@pytest.mark.skipif(importlib.util.find_spec("pyocd") is None, reason="needs pyocd")
def test_no_probe_attached_is_reported(tmp_path):
    image = tmp_path / "fw.elf"
    image.write_bytes(b"\x7fELF")
    with pytest.raises(FlashError) as info:
        pyocd_flasher.flash_stm32(image, get_board("nucleo-f446re"), tool="pyocd")
    assert "no debug probe" in info.value.message
    assert "USB" in info.value.hint and "udev" in info.value.hint


def test_flash_command_hands_the_built_image_to_the_flasher(tmp_path, monkeypatch):
    from mcu_ids import devices
    from mcu_ids.fileio import write_json
    from mcu_ids.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    image = tmp_path / "ids.elf"
    image.write_bytes(b"\x7fELF")
    write_json(ws.build_dir("nucleo-f446re") / devices.BUILD_INFO, {"artifact": str(image)})
    calls = []

    def flash(image, board, **options):
        calls.append((image, board.name))
        return "pyocd"

    monkeypatch.setattr(pyocd_flasher, "flash_stm32", flash)
    result = devices.flash_firmware(ws, "nucleo-f446re")
    assert calls == [(image, "nucleo-f446re")]
    assert result["flashed"] == str(image)
