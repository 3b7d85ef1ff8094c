"""The ESP-IDF project for ESP32 boards: render it here, build it where ``idf.py`` exists.

ESP-IDF is a large SDK with its own installer; this module does not install it. Without
``idf.py`` on PATH the rendered project is complete and the log says how to build it.
"""

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mcu_ids.build.boards import Board
from mcu_ids.build.render import render_template
from mcu_ids.errors import BoardError, BuildError
from mcu_ids.fileio import write_atomic

logger = logging.getLogger(__name__)

IDF_PY = "idf.py"
# ESP-IDF 5.1 is the oldest release with every API and option the project uses.
IDF_VERSION = ">=5.1"
# The esp-tflite-micro component line this project was written against (TFLM with ESP-NN).
ESP_TFLITE_MICRO_VERSION = ">=1.3.7,<1.5.0"
# Clocks the ESP32 and ESP32-S3 CPU options offer in menuconfig.
CPU_MHZ_CHOICES = (80, 160, 240)
FLASH_SIZE_CHOICES_MIB = (2, 4, 8, 16, 32)
MAIN_TASK_STACK_BYTES = 8192
ERROR_LINES_SHOWN = 20

# Files taken from the shared firmware folder for every ESP32 build, and per engine.
FIRMWARE_FILES = (
    "app.c",
    "app.h",
    "engine.h",
    "platform.h",
    "platform_esp32.c",
    "protocol.c",
    "protocol.h",
    "shift.c",
    "shift.h",
)
ENGINE_FIRMWARE_FILES = {"native": (), "tflm": ("engine_tflm.cc", "engine_tflm.h")}
# Files the export step generates from the model, for every engine and per engine.
GENERATED_FILES = ("model_config.h",)
ENGINE_GENERATED_FILES = {
    "native": ("engine_native.c", "engine_native.h"),
    "tflm": ("model_data.c", "model_data.h", "op_resolver.h"),
}
# ESP-IDF components the main component needs, per engine. The TFLM component is the name the
# component manager gives espressif/esp-tflite-micro once it is fetched.
ENGINE_REQUIRES = {
    "native": ("driver",),
    "tflm": ("driver", "espressif__esp-tflite-micro"),
}
SOURCE_SUFFIXES = (".c", ".cc", ".cpp")

# Files idf.py needs in a project; the tests check the rendered project against this list.
PROJECT_FILES = (
    "CMakeLists.txt",
    "sdkconfig.defaults",
    "main/CMakeLists.txt",
    "main/idf_component.yml",
    "main/esp32_board.h",
)

# [esp32] table of a board file: field -> (type, check, what is allowed).
_ESP32_FIELDS = {
    "idf_target": (str, lambda v: v in ("esp32", "esp32s3"), "esp32 or esp32s3"),
    "uart_num": (int, lambda v: 0 <= v <= 2, "0, 1 or 2"),
    "rx_full_threshold_bytes": (int, lambda v: 1 <= v <= 120, "1..120 (the FIFO is 128 bytes)"),
    "rx_timeout_symbols": (int, lambda v: 1 <= v <= 126, "1..126"),
    "rx_buffer_bytes": (int, lambda v: v > 128, "more than 128 (the FIFO size)"),
    "tx_buffer_bytes": (int, lambda v: v == 0 or v > 128, "0 or more than 128"),
    "marker_gpio": (int, lambda v: -1 <= v <= 48, "-1 (none) or a GPIO number"),
    "flash_baud": (int, lambda v: v >= 115200, "115200 or more"),
}


@dataclass(frozen=True)
class BuildResult:
    """A finished ESP-IDF build: the app image and what esptool needs to write it."""

    project_dir: Path
    build_dir: Path
    app_bin: Path
    flasher_args: Path
    app_size_bytes: int


def esp32_settings(board: Board) -> dict:
    """The board's ``[esp32]`` table, checked field by field."""
    table = board.section("esp32")
    for key, (kind, check, allowed) in _ESP32_FIELDS.items():
        if key not in table:
            raise BoardError(
                f"board file {board.path}: [esp32] lacks '{key}'",
                hint="copy the [esp32] table of boards/esp32.toml and adjust it",
            )
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, kind) or not check(value):
            raise BoardError(
                f"board file {board.path}: [esp32] {key} = {value!r}; allowed: {allowed}",
                hint="fix the value in the board file",
            )
    return dict(table)


def _cpu_mhz(board: Board) -> int:
    mhz, rest = divmod(board.clock_hz, 1_000_000)
    if rest or mhz not in CPU_MHZ_CHOICES:
        raise BoardError(
            f"board {board.name}: clock_hz {board.clock_hz} is not an ESP32 CPU clock; "
            f"allowed: {', '.join(f'{m}_000_000' for m in CPU_MHZ_CHOICES)}",
            hint="set clock_hz in the board file to one of the allowed values",
        )
    return mhz


def _flash_size(board: Board) -> str:
    mib, rest = divmod(board.flash_kib, 1024)
    if rest or mib not in FLASH_SIZE_CHOICES_MIB:
        raise BoardError(
            f"board {board.name}: flash_kib {board.flash_kib} is not an ESP flash size; "
            f"allowed: {', '.join(str(m * 1024) for m in FLASH_SIZE_CHOICES_MIB)}",
            hint="set flash_kib to the module's flash size",
        )
    return f"{mib}MB"


def _check_engine(board: Board, engine: str) -> None:
    if engine not in ENGINE_FIRMWARE_FILES:
        raise BuildError(
            f"unknown engine '{engine}' for an ESP-IDF project; allowed: "
            f"{', '.join(ENGINE_FIRMWARE_FILES)}"
        )
    if engine not in board.engines:
        raise BoardError(
            f"board {board.name} does not list engine '{engine}'; it offers "
            f"{', '.join(board.engines)}",
            hint="pick one of the board's engines with --engine",
        )


def _copy_inputs(names, folder: Path, dest: Path, what: str, hint: str) -> list[Path]:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise BuildError(f"{what} {folder} lacks {', '.join(missing)}", hint=hint)
    copied = []
    for name in names:
        copied.append(write_atomic(dest / name, (folder / name).read_bytes()))
    return copied


def render_espidf_project(
    board: Board,
    engine: str,
    generated_dir: Path,
    shared_firmware_dir: Path,
    out_dir: Path,
    source_hash: str,
) -> Path:
    """Write a self-contained ESP-IDF project for ``board`` and ``engine`` into ``out_dir``.

    ``main/`` gets copies of the shared firmware, the ESP32 board layer, the engine and the
    files generated from the model, so the folder can be built on another machine.
    """
    _check_engine(board, engine)
    esp = esp32_settings(board)
    out_dir = Path(out_dir)
    main = out_dir / "main"
    main.mkdir(parents=True, exist_ok=True)
    copied = _copy_inputs(
        FIRMWARE_FILES + ENGINE_FIRMWARE_FILES[engine],
        Path(shared_firmware_dir),
        main,
        "the firmware folder",
        "reinstall mcu-ids from a full checkout",
    )
    copied += _copy_inputs(
        GENERATED_FILES + ENGINE_GENERATED_FILES[engine],
        Path(generated_dir),
        main,
        "the export folder",
        "run `mcu-ids export` (or `mcu-ids build`) first",
    )
    # Listed from what was copied, not from the folder, so a previous engine's files left in
    # main/ are not compiled.
    sources = sorted(path.name for path in copied if path.suffix in SOURCE_SUFFIXES)
    context = {
        "board": board,
        "engine": engine,
        "esp": esp,
        "idf_target": esp["idf_target"],
        "project_name": f"mcu_ids_{board.name.replace('-', '_')}_{engine}",
        "sources": sources,
        "requires": ENGINE_REQUIRES[engine],
        "idf_version": IDF_VERSION,
        "tflite_micro_version": ESP_TFLITE_MICRO_VERSION,
        "cpu_mhz": _cpu_mhz(board),
        "flash_size": _flash_size(board),
        # The console is UART0; only when the protocol uses it too must the rates agree.
        "console_baud": board.baud if esp["uart_num"] == 0 else 115200,
        "main_stack_bytes": MAIN_TASK_STACK_BYTES,
    }
    for name in PROJECT_FILES:
        render_template(f"esp-idf/{name}.j2", out_dir / name, context, source_hash)
    logger.info("wrote the ESP-IDF project for %s (%s engine) to %s", board.name, engine, out_dir)
    return out_dir


def build_instructions(project_dir: Path, idf_target: str) -> str:
    """The commands that build the rendered project with ESP-IDF."""
    return (
        f"cd {project_dir} && idf.py set-target {idf_target} && idf.py build "
        "(after `. $IDF_PATH/export.sh` of ESP-IDF 5.1 or later)"
    )


def _idf_target(project_dir: Path) -> str:
    text = (project_dir / "sdkconfig.defaults").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("CONFIG_IDF_TARGET="):
            return line.split("=", 1)[1].strip().strip('"')
    raise BuildError(f"{project_dir}/sdkconfig.defaults names no CONFIG_IDF_TARGET")


def _run_idf(args: list[str], project_dir: Path) -> None:
    command = [IDF_PY, "-C", str(project_dir), *args]
    logger.info("running %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(lines[-ERROR_LINES_SHOWN:])
        raise BuildError(
            f"`{' '.join(command)}` failed with exit code {done.returncode}:\n{tail}",
            hint="run the same command in the project folder to see the whole log",
        )


def build_espidf_project(project_dir: Path) -> BuildResult | None:
    """Build the project with ``idf.py`` if it is on PATH; otherwise say how and return None."""
    project_dir = Path(project_dir)
    if not (project_dir / "CMakeLists.txt").is_file():
        raise BuildError(
            f"{project_dir} is not an ESP-IDF project (no CMakeLists.txt)",
            hint="render it first with `mcu-ids build --board esp32`",
        )
    target = _idf_target(project_dir)
    if shutil.which(IDF_PY) is None:
        logger.warning(
            "idf.py is not on PATH, so the ESP-IDF project was written but not built; "
            "build it with: %s",
            build_instructions(project_dir, target),
        )
        return None
    # set-target wipes an existing build; only a fresh project needs it.
    if not (project_dir / "sdkconfig").exists():
        _run_idf(["set-target", target], project_dir)
    _run_idf(["build"], project_dir)
    return build_result(project_dir)


def build_result(project_dir: Path) -> BuildResult:
    """Describe an already built project from its ``build/flasher_args.json``."""
    build_dir = Path(project_dir) / "build"
    flasher_args = build_dir / "flasher_args.json"
    if not flasher_args.is_file():
        raise BuildError(
            f"{flasher_args} does not exist: the project has not been built",
            hint=build_instructions(Path(project_dir), _idf_target(Path(project_dir))),
        )
    args = json.loads(flasher_args.read_text(encoding="utf-8"))
    app_bin = build_dir / args["app"]["file"]
    return BuildResult(
        project_dir=Path(project_dir),
        build_dir=build_dir,
        app_bin=app_bin,
        flasher_args=flasher_args,
        app_size_bytes=app_bin.stat().st_size,
    )
