"""STM32 firmware: render a CMake project from the board file and build it with arm-none-eabi-gcc.

The board's ``[stm32]`` table holds the chip facts the firmware needs (clock tree, serial port,
pins, interrupt numbers). They are checked here, turned into ``board_config.h`` and a linker
script, and the finished ELF is measured against the board's flash and RAM.
"""

import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mcu_ids.build.boards import Board
from mcu_ids.build.render import render_template
from mcu_ids.errors import BoardError, BuildError
from mcu_ids.fileio import write_json
from mcu_ids.resources import asset_dir

log = logging.getLogger(__name__)

APPS = ("ids", "link-check")
# Portable firmware sources every "ids" build compiles, relative to the firmware folder.
SHARED_SOURCES = ("app.c", "protocol.c", "shift.c")
# Generated engine sources per engine, relative to the generated model folder.
ENGINE_SOURCES = {"native": ("engine_native.c",), "tflm": ("model_data.c",)}
# The receive ring buffer of firmware/platform_stm32.c (RX_BUFFER_SIZE), stated in the handshake
# so the harness keeps that many bytes of requests in flight.
STM32_RX_BUFFER_BYTES = 2048
PROJECT_FILE = "stm32_project.json"
BUILD_SUBDIR = "build"
ELF_NAME = "firmware.elf"
BIN_NAME = "firmware.bin"
KIB = 1024
ERROR_LINES_SHOWN = 12

FAMILIES = ("stm32f4", "stm32l4")
CLOCK_SOURCES = ("hsi", "hse-bypass", "reset")
UART_KINDS = ("usart", "lpuart")
UART_BUSES = ("apb1", "apb2")
HSI_HZ = 16_000_000
MHZ = 1_000_000

# Compiler flags for each core named in board files.
CPU_FLAGS = {
    "cortex-m4f": "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard",
    "cortex-m4": "-mcpu=cortex-m4 -mthumb -mfloat-abi=soft",
}

# What platform_ticks() counts for each cycle counter an STM32 board may name.
TICK_KINDS = {"dwt-cyccnt": "cpu-cycles", "systick-icount": "emulated-instructions"}

# Datasheet limits per family (F4: RM0390 6.3.2 and 3.4; L4+: RM0432 6.4.4 and 3.3.3, range 1
# boost). pll_m/pll_n: allowed divider ranges; vco_in/vco: PLL input and VCO frequency ranges;
# hz_per_wait_state: HCLK each flash wait state buys at 2.7-3.6 V.
FAMILY_LIMITS = {
    "stm32f4": {
        "pll_m": (2, 63),
        "pll_n": (50, 432),
        "vco_in_hz": (1 * MHZ, 2 * MHZ),
        "vco_hz": (100 * MHZ, 432 * MHZ),
        "apb1_max_hz": 45 * MHZ,
        "apb2_max_hz": 90 * MHZ,
        "hz_per_wait_state": 30 * MHZ,
        "rcc_registers": ("APB1ENR", "APB2ENR"),
    },
    "stm32l4": {
        "pll_m": (1, 16),
        "pll_n": (8, 127),
        "vco_in_hz": (2_660_000, 16 * MHZ),
        "vco_hz": (64 * MHZ, 344 * MHZ),
        "apb1_max_hz": 120 * MHZ,
        "apb2_max_hz": 120 * MHZ,
        "hz_per_wait_state": 20 * MHZ,
        "rcc_registers": ("APB1ENR1", "APB1ENR2", "APB2ENR"),
    },
}
PLL_OUTPUT_DIVIDERS = (2, 4, 6, 8)
# APB prescaler field values (same coding on F4 and L4): 0 = not divided, 4.. = /2 ../16.
APB_PRESCALER_BITS = {1: 0, 2: 4, 4: 5, 8: 6, 16: 7}
# LPUART baud register limits (RM0432 52.4.7); USART's lower limit with 16x oversampling.
LPUART_BRR_RANGE = (0x300, 0xFFFFF)
USART_BRR_RANGE = (16, 0xFFFF)
PIN_PATTERN = re.compile(r"^P([A-K])([0-9]{1,2})$")
PINS_PER_PORT = 16

_REQUIRED = {
    "family": str,
    "irq_count": int,
    "flash_origin": int,
    "ram_origin": int,
    "stack_bytes": int,
    "clock_source": str,
    "flash_wait_states": int,
    "apb1_divider": int,
    "apb2_divider": int,
    "uart_base": int,
    "uart_irq": int,
    "uart_bus": str,
    "uart_rcc_register": str,
    "uart_rcc_bit": int,
    "uart_kind": str,
    "uart_tx": str,
    "uart_rx": str,
    "uart_af": int,
    "dev_id": int,
}
_OPTIONAL = {
    "pll_m": int,
    "pll_n": int,
    "pll_div": int,
    "hse_hz": int,
    "power_boost": bool,
    "marker": str,
    "semihosting": bool,
    "pyocd_target": str,
    "openocd_target": str,
    "toolchain_prefix": str,
}


@dataclass(frozen=True)
class Stm32Config:
    """The checked ``[stm32]`` table plus the register values derived from it."""

    family: str
    family_macro: str
    irq_count: int
    flash_origin: int
    ram_origin: int
    stack_bytes: int
    clock_source: str
    pll_m: int
    pll_n: int
    pll_div_bits: int
    flash_wait_states: int
    apb1_bits: int
    apb2_bits: int
    power_boost: bool
    uart_base: int
    uart_irq: int
    uart_rcc_register: str
    uart_rcc_bit: int
    uart_clock_hz: int
    uart_brr: int
    tx_port: int
    tx_pin: int
    rx_port: int
    rx_pin: int
    uart_af: int
    uart_vddio2: bool
    marker_port: int | None
    marker_pin: int | None
    tick_kind: str
    semihosting: bool
    cpu_flags: str
    toolchain_prefix: str
    dev_id: int
    pyocd_target: str | None
    openocd_target: str | None


@dataclass(frozen=True)
class BuildResult:
    """A built firmware image and how much of the board it takes."""

    elf: Path
    bin: Path
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    flash_kib: int
    ram_kib: int

    @property
    def flash_bytes(self) -> int:
        """Flash used: code, constants and the initial values of initialised data."""
        return self.text_bytes + self.data_bytes

    @property
    def ram_bytes(self) -> int:
        """RAM used: initialised and zeroed data, including the reserved stack."""
        return self.data_bytes + self.bss_bytes


def _table_error(board: Board, field: str, problem: str, hint: str | None = None) -> BoardError:
    return BoardError(
        f"board file {board.path}: [stm32] field '{field}' {problem}",
        hint=hint or "fix the value in the board file; see the chip's reference manual",
    )


def _read_table(board: Board) -> dict:
    table = board.section("stm32")
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _table_error(
            board,
            unknown[0],
            "is not known",
            hint=f"allowed fields: {', '.join([*_REQUIRED, *_OPTIONAL])}",
        )
    for name, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if name not in table:
            if name in _REQUIRED:
                raise _table_error(board, name, "is missing")
            continue
        value = table[name]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise _table_error(board, name, f"is {value!r}, expected {kind.__name__}")
    return table


def _choice(board: Board, table: dict, field: str, allowed: tuple) -> str:
    value = table[field]
    if value not in allowed:
        raise _table_error(
            board, field, f"is {value!r}", hint=f"allowed: {', '.join(map(str, allowed))}"
        )
    return value


def _in_range(board: Board, field: str, value: int, low: int, high: int, unit: str = "") -> None:
    if not low <= value <= high:
        raise _table_error(board, field, f"gives {value}{unit}, allowed {low}..{high}{unit}")


def _parse_pin(board: Board, field: str, text: str) -> tuple[int, int]:
    match = PIN_PATTERN.match(text)
    if not match or int(match.group(2)) >= PINS_PER_PORT:
        raise _table_error(board, field, f"is {text!r}", hint="write a pin like 'PA2' (port, 0-15)")
    return ord(match.group(1)) - ord("A"), int(match.group(2))


def _pll_config(board: Board, table: dict, family: str) -> tuple[int, int, int]:
    """Check the PLL settings against the chip's ranges; return (M, N, output divider bits)."""
    limits = FAMILY_LIMITS[family]
    for field in ("pll_m", "pll_n", "pll_div"):
        if field not in table:
            raise _table_error(board, field, "is missing (needed unless clock_source = 'reset')")
    pll_m, pll_n, pll_div = table["pll_m"], table["pll_n"], table["pll_div"]
    _in_range(board, "pll_m", pll_m, *limits["pll_m"])
    _in_range(board, "pll_n", pll_n, *limits["pll_n"])
    if pll_div not in PLL_OUTPUT_DIVIDERS:
        raise _table_error(
            board, "pll_div", f"is {pll_div}", hint=f"allowed: {PLL_OUTPUT_DIVIDERS}"
        )
    if table["clock_source"] == "hse-bypass":
        if "hse_hz" not in table:
            raise _table_error(board, "hse_hz", "is missing (needed for clock_source hse-bypass)")
        source_hz = table["hse_hz"]
    else:
        source_hz = HSI_HZ
    vco_in = source_hz // pll_m
    _in_range(board, "pll_m", vco_in, *limits["vco_in_hz"], unit=" Hz at the PLL input")
    vco = vco_in * pll_n
    _in_range(board, "pll_n", vco, *limits["vco_hz"], unit=" Hz VCO")
    sysclk = vco // pll_div
    if sysclk != board.clock_hz:
        raise _table_error(
            board,
            "pll_m/pll_n/pll_div",
            f"together make {source_hz} / {pll_m} * {pll_n} / {pll_div} = {sysclk} Hz, "
            f"but clock_hz is {board.clock_hz}",
            hint="choose PLL values that give clock_hz",
        )
    return pll_m, pll_n, pll_div // 2 - 1


def _bus_bits(board: Board, table: dict, family: str) -> tuple[int, int]:
    limits = FAMILY_LIMITS[family]
    bits = []
    for bus in ("apb1", "apb2"):
        field = f"{bus}_divider"
        divider = table[field]
        if divider not in APB_PRESCALER_BITS:
            raise _table_error(
                board, field, f"is {divider}", hint=f"allowed: {tuple(APB_PRESCALER_BITS)}"
            )
        bus_hz = board.clock_hz // divider
        if table["clock_source"] != "reset" and bus_hz > limits[f"{bus}_max_hz"]:
            raise _table_error(
                board,
                field,
                f"gives {bus_hz} Hz, above the {limits[f'{bus}_max_hz']} Hz limit of {bus}",
            )
        bits.append(APB_PRESCALER_BITS[divider])
    return bits[0], bits[1]


def _check_wait_states(board: Board, table: dict, family: str) -> None:
    if table["clock_source"] == "reset":
        return
    needed = math.ceil(board.clock_hz / FAMILY_LIMITS[family]["hz_per_wait_state"]) - 1
    if table["flash_wait_states"] < needed:
        raise _table_error(
            board,
            "flash_wait_states",
            f"is {table['flash_wait_states']}, but {board.clock_hz} Hz needs at least {needed}",
        )


def _uart_brr(board: Board, table: dict, uart_clock_hz: int) -> int:
    if table["uart_kind"] == "lpuart":
        brr, allowed = round(256 * uart_clock_hz / board.baud), LPUART_BRR_RANGE
    else:
        brr, allowed = round(uart_clock_hz / board.baud), USART_BRR_RANGE
    if not allowed[0] <= brr <= allowed[1]:
        raise BoardError(
            f"board file {board.path}: baud {board.baud} from a {uart_clock_hz} Hz "
            f"{table['uart_kind']} clock needs a divider of {brr}, outside {allowed}",
            hint="choose another baud rate or bus divider",
        )
    return brr


def stm32_config(board: Board) -> Stm32Config:
    """Check a board's ``[stm32]`` table and derive the register values the firmware uses."""
    table = _read_table(board)
    family = _choice(board, table, "family", FAMILIES)
    clock_source = _choice(board, table, "clock_source", CLOCK_SOURCES)
    _choice(board, table, "uart_kind", UART_KINDS)
    bus = _choice(board, table, "uart_bus", UART_BUSES)
    _choice(board, table, "uart_rcc_register", FAMILY_LIMITS[family]["rcc_registers"])
    if board.core not in CPU_FLAGS:
        raise BoardError(
            f"board file {board.path}: core {board.core!r} is not an STM32 core this build knows",
            hint=f"known cores: {', '.join(CPU_FLAGS)}",
        )
    if board.cycle_counter not in TICK_KINDS:
        raise BoardError(
            f"board file {board.path}: cycle_counter {board.cycle_counter!r} is not available "
            "on STM32",
            hint=f"use one of: {', '.join(TICK_KINDS)}",
        )
    if clock_source == "reset":
        pll_m, pll_n, pll_div_bits = 0, 0, 0
    else:
        pll_m, pll_n, pll_div_bits = _pll_config(board, table, family)
    apb1_bits, apb2_bits = _bus_bits(board, table, family)
    _check_wait_states(board, table, family)
    uart_clock_hz = board.clock_hz // table[f"{bus}_divider"]
    tx_port, tx_pin = _parse_pin(board, "uart_tx", table["uart_tx"])
    rx_port, rx_pin = _parse_pin(board, "uart_rx", table["uart_rx"])
    marker_port = marker_pin = None
    if "marker" in table:
        marker_port, marker_pin = _parse_pin(board, "marker", table["marker"])
    port_g = ord("G") - ord("A")
    return Stm32Config(
        family=family,
        family_macro=f"MCU_IDS_{family.upper()}",
        irq_count=table["irq_count"],
        flash_origin=table["flash_origin"],
        ram_origin=table["ram_origin"],
        stack_bytes=table["stack_bytes"],
        clock_source=clock_source,
        pll_m=pll_m,
        pll_n=pll_n,
        pll_div_bits=pll_div_bits,
        flash_wait_states=table["flash_wait_states"],
        apb1_bits=apb1_bits,
        apb2_bits=apb2_bits,
        power_boost=table.get("power_boost", False),
        uart_base=table["uart_base"],
        uart_irq=table["uart_irq"],
        uart_rcc_register=table["uart_rcc_register"],
        uart_rcc_bit=table["uart_rcc_bit"],
        uart_clock_hz=uart_clock_hz,
        uart_brr=_uart_brr(board, table, uart_clock_hz),
        tx_port=tx_port,
        tx_pin=tx_pin,
        rx_port=rx_port,
        rx_pin=rx_pin,
        uart_af=table["uart_af"],
        # Port G of the L4+ is powered from VDDIO2, isolated at reset.
        uart_vddio2=family == "stm32l4" and port_g in (tx_port, rx_port),
        marker_port=marker_port,
        marker_pin=marker_pin,
        tick_kind=TICK_KINDS[board.cycle_counter],
        semihosting=table.get("semihosting", False),
        cpu_flags=CPU_FLAGS[board.core],
        toolchain_prefix=table.get("toolchain_prefix", "arm-none-eabi-"),
        dev_id=table["dev_id"],
        pyocd_target=table.get("pyocd_target"),
        openocd_target=table.get("openocd_target"),
    )


def _check_engine(board: Board, engine: str) -> None:
    if board.toolchain != "arm-none-eabi-gcc":
        raise BoardError(
            f"board '{board.name}' is built with {board.toolchain}, not arm-none-eabi-gcc",
            hint="build it with its own toolchain",
        )
    if engine not in board.engines:
        raise BoardError(
            f"engine '{engine}' is not available on board '{board.name}'",
            hint=f"engines for this board: {', '.join(board.engines)}",
        )


def _engine_sources(
    firmware_dir: Path, generated_dir: Path, engine: str, engine_sources
) -> list[Path]:
    """Check the shared and engine sources exist; return the engine's, absolute."""
    missing = [name for name in SHARED_SOURCES if not (firmware_dir / name).is_file()]
    if missing:
        raise BuildError(
            f"firmware source(s) {', '.join(missing)} missing from {firmware_dir}",
            hint="reinstall mcu-ids from a full checkout",
        )
    if not (generated_dir / "model_config.h").is_file():
        raise BuildError(
            f"generated model folder {generated_dir} has no model_config.h",
            hint="export the model first (`mcu-ids export`)",
        )
    if engine_sources is None:
        engine_sources = [generated_dir / name for name in ENGINE_SOURCES[engine]]
    sources = [Path(source).resolve() for source in engine_sources]
    for source in sources:
        if not source.is_file():
            raise BuildError(
                f"engine source {source} does not exist",
                hint=f"export the model for the {engine} engine first",
            )
    return sources


def _check_tflm_dir(tflm_dir) -> None:
    marker = Path(tflm_dir or "") / "tensorflow" / "lite" / "micro" / "micro_interpreter.h"
    if not tflm_dir or not marker.is_file():
        raise BuildError(
            f"TFLite Micro source tree {tflm_dir or '(none given)'} not found (expected {marker})",
            hint="clone github.com/tensorflow/tflite-micro, run "
            "tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py <folder> "
            "in it, and pass that folder with --tflm-dir",
        )


def render_stm32_project(
    board: Board,
    engine: str,
    generated_dir: Path | None,
    out_dir: Path,
    source_hash: str,
    *,
    app: str = "ids",
    tflm_dir: Path | None = None,
    engine_sources: list[Path] | None = None,
    profile_layers: bool | None = None,
) -> Path:
    """Write the CMake project for ``board`` into ``out_dir`` and return ``out_dir``.

    ``app`` is ``ids`` (the detector: shared firmware + generated engine from ``generated_dir``)
    or ``link-check`` (echo and timer check, no model). ``engine_sources`` replaces the engine's
    usual generated files (``ENGINE_SOURCES``), e.g. with a test engine. The project refers to the
    firmware and generated sources where they are; it does not copy them.

    ``profile_layers`` builds the native engine with its per-op tick table (one tick read per op);
    by default it is on for the generated native engine, off for TFLite Micro and test engines.
    """
    if app not in APPS:
        raise BuildError(f"unknown application {app!r}", hint=f"allowed: {', '.join(APPS)}")
    _check_engine(board, engine)
    cfg = stm32_config(board)
    firmware_dir = asset_dir("firmware")
    generated = Path(generated_dir).resolve() if generated_dir else Path(out_dir).resolve()
    sources: list[Path] = []
    if app == "ids":
        sources = _engine_sources(firmware_dir, generated, engine, engine_sources)
        if engine == "tflm":
            _check_tflm_dir(tflm_dir)
    out_dir = Path(out_dir)
    if profile_layers is None:
        profile_layers = engine == "native" and engine_sources is None
    defines = {"MCU_IDS_RX_BUFFER_BYTES": str(STM32_RX_BUFFER_BYTES)}
    if profile_layers:
        defines["MCU_IDS_PROFILE_LAYERS"] = None
    context = {
        "board": board,
        "cfg": cfg,
        "engine": engine,
        "app": app,
        "firmware_dir": firmware_dir.as_posix(),
        "generated_dir": generated.as_posix(),
        "tflm_dir": Path(tflm_dir).resolve().as_posix() if tflm_dir else "",
        "shared_sources": SHARED_SOURCES,
        "engine_sources": [source.as_posix() for source in sources],
        "defines": defines,
    }
    outputs = {
        "stm32/CMakeLists.txt.j2": "CMakeLists.txt",
        "stm32/arm-none-eabi.cmake.j2": "arm-none-eabi.cmake",
        "stm32/linker.ld.j2": "linker.ld",
        "stm32/board_config.h.j2": "board_config.h",
    }
    for template, name in outputs.items():
        render_template(template, out_dir / name, context, source_hash)
    write_json(
        out_dir / PROJECT_FILE,
        {
            "board": board.name,
            "board_file": str(board.path),
            "engine": engine,
            "app": app,
            "flash_kib": board.flash_kib,
            "ram_kib": board.ram_kib,
            "toolchain_prefix": cfg.toolchain_prefix,
        },
    )
    log.info("rendered %s project for %s (%s engine) in %s", app, board.name, engine, out_dir)
    return out_dir


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"{name} not found on PATH", hint=hint)
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    log.debug("running %s", " ".join(command))
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _first_errors(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"error|Error|undefined", line)]
    return "\n".join((lines or output.splitlines())[:ERROR_LINES_SHOWN])


_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def _raise_overflow(output: str, info: dict) -> None:
    """Turn the linker's region overflow messages into one BoardError with sizes in KiB."""
    overflows = {region: int(size) for region, size in _OVERFLOW.findall(output)}
    if not overflows:
        return
    parts = []
    for region, extra in sorted(overflows.items()):
        limit = info["flash_kib"] if region == "FLASH" else info["ram_kib"]
        parts.append(f"{math.ceil(extra / KIB)} KiB more {region.lower()} than its {limit} KiB")
    raise BoardError(
        f"the firmware does not fit board '{info['board']}': it needs " + " and ".join(parts),
        hint="use a smaller model, another engine, or a board with more memory",
    )


def parse_size_output(text: str) -> tuple[int, int, int]:
    """(text, data, bss) bytes from ``arm-none-eabi-size`` in its default (Berkeley) format."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and all(field.isdigit() for field in fields[:3]):
            return int(fields[0]), int(fields[1]), int(fields[2])
    raise BuildError(f"cannot read section sizes from arm-none-eabi-size output: {text!r}")


def check_memory(result: BuildResult, board_name: str) -> None:
    """Refuse a firmware whose flash or RAM use exceeds the board's, saying by how much."""
    for what, used, limit_kib in (
        ("flash", result.flash_bytes, result.flash_kib),
        ("RAM", result.ram_bytes, result.ram_kib),
    ):
        if used > limit_kib * KIB:
            over = math.ceil((used - limit_kib * KIB) / KIB)
            raise BoardError(
                f"the firmware uses {used} bytes of {what}, {over} KiB more than the "
                f"{limit_kib} KiB of board '{board_name}'",
                hint="use a smaller model, another engine, or a board with more memory",
            )


def _read_project(project_dir: Path) -> dict:
    import json

    path = project_dir / PROJECT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BuildError(
            f"{project_dir} is not a rendered STM32 project ({PROJECT_FILE} missing)",
            hint="render it first with `mcu-ids build`",
        ) from exc


def build_stm32_project(project_dir: Path, *, jobs: int | None = None) -> BuildResult:
    """Configure and build a rendered project; return the image and its measured size."""
    project_dir = Path(project_dir).resolve()
    info = _read_project(project_dir)
    prefix = info["toolchain_prefix"]
    cmake = _require_tool("cmake", "install CMake 3.20 or newer (`apt-get install cmake`)")
    _require_tool(
        f"{prefix}gcc",
        "install the GNU Arm toolchain (`apt-get install gcc-arm-none-eabi "
        "libnewlib-arm-none-eabi`)",
    )
    size_tool = _require_tool(f"{prefix}size", "install binutils-arm-none-eabi")
    build_dir = project_dir / BUILD_SUBDIR
    generator = "Ninja" if shutil.which("ninja") else "Unix Makefiles"
    configure = _run(
        [cmake, "-S", str(project_dir), "-B", str(build_dir), "-G", generator], project_dir
    )
    if configure.returncode != 0:
        raise BuildError(
            f"configuring the firmware in {project_dir} failed:\n"
            + _first_errors(configure.stdout + configure.stderr),
            hint="see the CMake messages above",
        )
    build = _run(
        [cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)],
        project_dir,
    )
    output = build.stdout + build.stderr
    if build.returncode != 0:
        _raise_overflow(output, info)
        raise BuildError(
            f"compiling the firmware for {info['board']} failed:\n" + _first_errors(output),
            hint=f"the full log: cmake --build {build_dir}",
        )
    elf = build_dir / ELF_NAME
    sizes = _run([size_tool, str(elf)], project_dir)
    if sizes.returncode != 0:
        raise BuildError(f"{prefix}size could not read {elf}: {sizes.stderr.strip()}")
    text, data, bss = parse_size_output(sizes.stdout)
    result = BuildResult(
        elf=elf,
        bin=build_dir / BIN_NAME,
        text_bytes=text,
        data_bytes=data,
        bss_bytes=bss,
        flash_kib=info["flash_kib"],
        ram_kib=info["ram_kib"],
    )
    check_memory(result, info["board"])
    log.info(
        "built %s: %d bytes flash of %d KiB, %d bytes RAM of %d KiB",
        elf,
        result.flash_bytes,
        result.flash_kib,
        result.ram_bytes,
        result.ram_kib,
    )
    return result
