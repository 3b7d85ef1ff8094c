"""Flash STM32 Nucleo boards through their ST-LINK: pyOCD first, then openocd or st-flash.

The chip is checked before anything is written: its DBGMCU IDCODE device id must be the one in
the board file's ``[stm32]`` table (``dev_id``), so a wrong board is refused, not overwritten.
"""

import logging
import shutil
import subprocess
from pathlib import Path

from mcu_ids.build.boards import Board
from mcu_ids.build.stm32 import stm32_config
from mcu_ids.errors import FlashError

log = logging.getLogger(__name__)

# DBGMCU_IDCODE is at the same address on F4 and L4; its low 12 bits are the device id.
DBGMCU_IDCODE = 0xE0042000
DEV_ID_MASK = 0xFFF
TOOL_TIMEOUT_S = 120
_PERMISSION_WORDS = ("permission", "access denied", "insufficient permissions", "libusb_open")
_NO_PROBE_WORDS = ("no probe", "no st-link", "couldn't find any st-link", "open failed")


def _no_probe(board: Board) -> FlashError:
    return FlashError(
        f"no debug probe found for board '{board.name}'",
        hint="connect the Nucleo's ST-LINK USB port with a data cable; on Linux install the "
        "ST-LINK udev rules (pyocd docs: 'udev rules') and replug",
    )


def _permission_denied(board: Board, detail: str) -> FlashError:
    return FlashError(
        f"permission denied opening the debug probe of board '{board.name}': {detail}",
        hint="install the ST-LINK udev rules and replug, or add yourself to the plugdev group",
    )


def _classify(board: Board, tool: str, output: str) -> FlashError:
    text = output.lower()
    if any(word in text for word in _PERMISSION_WORDS):
        return _permission_denied(board, output.strip().splitlines()[-1])
    if any(word in text for word in _NO_PROBE_WORDS):
        return _no_probe(board)
    tail = "\n".join(output.strip().splitlines()[-5:])
    return FlashError(f"{tool} failed to flash board '{board.name}':\n{tail}")


def check_device_id(board: Board, idcode: int) -> None:
    """Refuse a chip whose device id differs from the board file's."""
    expected = stm32_config(board).dev_id
    found = idcode & DEV_ID_MASK
    if found != expected:
        raise FlashError(
            f"the connected chip has device id 0x{found:03x}, but board '{board.name}' "
            f"({board.chip}) has 0x{expected:03x}",
            hint="connect the right board, or pass the --board that is connected",
        )


def _flash_with_pyocd(image: Path, board: Board, target: str, probe: str | None) -> None:
    from pyocd.core.exceptions import Error as PyocdError
    from pyocd.core.helpers import ConnectHelper
    from pyocd.flash.file_programmer import FileProgrammer

    try:
        session = ConnectHelper.session_with_chosen_probe(
            blocking=False,
            unique_id=probe,
            target_override=target,
            options={"frequency": 4_000_000},
        )
    except (PyocdError, OSError) as exc:
        raise _classify(board, "pyocd", str(exc)) from exc
    if session is None:
        raise _no_probe(board)
    try:
        with session:
            check_device_id(board, session.target.read32(DBGMCU_IDCODE))
            FileProgrammer(session).program(str(image))
            session.target.reset()
    except FlashError:
        raise
    except (PyocdError, OSError) as exc:
        raise _classify(board, "pyocd", str(exc)) from exc


def _run_tool(command: list[str], board: Board) -> None:
    log.info("running %s", " ".join(command))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise FlashError(
            f"{command[0]} did not finish within {TOOL_TIMEOUT_S} s",
            hint="unplug and replug the board, then try again",
        ) from exc
    if done.returncode != 0:
        raise _classify(board, command[0], done.stdout + done.stderr)


def flash_stm32(
    image: Path, board: Board, *, probe: str | None = None, tool: str | None = None
) -> str:
    """Write ``image`` (ELF, or .bin for st-flash) to the board and reset it; return the tool used.

    ``tool`` forces ``pyocd``, ``openocd`` or ``st-flash``; by default pyOCD is used if it is
    installed, else whichever of openocd and st-flash is on PATH. Only pyOCD checks the chip's
    device id before writing; openocd checks it through its target script.
    """
    image = Path(image)
    if not image.is_file():
        raise FlashError(f"firmware image {image} does not exist", hint="build it first")
    cfg = stm32_config(board)
    choice = tool or _pick_tool()
    if choice == "pyocd":
        if cfg.pyocd_target is None:
            raise FlashError(f"board file {board.path} names no [stm32] pyocd_target")
        try:
            import pyocd  # noqa: F401
        except ImportError as exc:
            raise FlashError("pyocd is not installed", hint="pip install pyocd") from exc
        _flash_with_pyocd(image, board, cfg.pyocd_target, probe)
    elif choice == "openocd":
        if cfg.openocd_target is None:
            raise FlashError(f"board file {board.path} names no [stm32] openocd_target")
        _run_tool(
            [
                "openocd",
                "-f",
                "interface/stlink.cfg",
                "-f",
                cfg.openocd_target,
                "-c",
                f"program {image.as_posix()} verify reset exit",
            ],
            board,
        )
    elif choice == "st-flash":
        binary = image.with_suffix(".bin")
        if not binary.is_file():
            raise FlashError(f"st-flash needs a raw image; {binary} does not exist")
        _run_tool(["st-flash", "--reset", "write", str(binary), hex(cfg.flash_origin)], board)
    else:
        raise FlashError(f"unknown flashing tool {choice!r}", hint="use pyocd, openocd or st-flash")
    log.info("flashed %s to %s with %s", image, board.name, choice)
    return choice


def _pick_tool() -> str:
    try:
        import pyocd  # noqa: F401

        return "pyocd"
    except ImportError:
        pass
    for name in ("openocd", "st-flash"):
        if shutil.which(name):
            return name
    raise FlashError(
        "no STM32 flashing tool found (pyocd, openocd or st-flash)",
        hint="pip install pyocd",
    )
