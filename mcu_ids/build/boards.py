"""The board registry: one TOML data file per board in ``boards/``, checked on load."""

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mcu_ids.errors import BoardError
from mcu_ids.resources import asset_dir

BOARDS_DIR_ENV = "MCU_IDS_BOARDS_DIR"
ENGINES = ("native", "tflm")
TOOLCHAINS = ("gcc", "arm-none-eabi-gcc", "esp-idf")
FLASHERS = ("host-process", "qemu", "pyocd", "esptool")
CYCLE_COUNTERS = ("clock-monotonic", "systick-icount", "dwt-cyccnt", "xtensa-ccount")

# field name -> (type, required, allowed values or None)
_FIELDS: dict[str, tuple[type | tuple[type, ...], bool, tuple | None]] = {
    "name": (str, True, None),
    "description": (str, True, None),
    "chip": (str, True, None),
    "core": (str, True, None),
    "clock_hz": (int, True, None),
    "flash_kib": (int, True, None),
    "ram_kib": (int, True, None),
    "uart": (str, True, None),
    "baud": (int, True, None),
    "toolchain": (str, True, TOOLCHAINS),
    "flasher": (str, True, FLASHERS),
    "engines": (list, True, None),
    "default_engine": (str, True, ENGINES),
    "cycle_counter": (str, True, CYCLE_COUNTERS),
    "supply_v": ((int, float), True, None),
    "active_current_ma": ((int, float), True, None),
    "current_source": (str, True, None),
    "emulated": (bool, True, None),
}

# Tables a board may carry for the toolchain or launcher that uses them; their modules check them.
_SECTIONS = ("stm32", "esp32", "qemu", "host")


@dataclass(frozen=True)
class Board:
    """A board as described by its data file."""

    name: str
    description: str
    chip: str
    core: str
    clock_hz: int
    flash_kib: int
    ram_kib: int
    uart: str
    baud: int
    toolchain: str
    flasher: str
    engines: tuple[str, ...]
    default_engine: str
    cycle_counter: str
    supply_v: float
    active_current_ma: float
    current_source: str
    emulated: bool
    path: Path
    sections: dict = field(default_factory=dict)

    def section(self, name: str) -> dict:
        """Return a board-specific table such as ``[stm32]``, or fail naming the file."""
        if name not in self.sections:
            raise BoardError(
                f"board file {self.path} has no [{name}] table",
                hint=f"add the [{name}] table; see another board of the same family",
            )
        return self.sections[name]


def _check_field(path: Path, key: str, value, spec) -> None:
    kind, _required, allowed = spec
    # bool is an int in Python; a clock of `true` Hz is still a mistake.
    if isinstance(value, bool) and kind is not bool:
        ok = False
    else:
        ok = isinstance(value, kind)
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BoardError(
            f"board file {path}: field '{key}' is {value!r}, expected {names}",
            hint="fix the value in the board file",
        )
    if allowed is not None and value not in allowed:
        raise BoardError(
            f"board file {path}: field '{key}' is {value!r}, allowed: {', '.join(allowed)}",
            hint="use one of the allowed values",
        )
    if kind in (int, (int, float)) and value <= 0 and key != "active_current_ma":
        raise BoardError(f"board file {path}: field '{key}' must be positive, got {value}")


def parse_board(path: Path) -> Board:
    """Load and validate one board file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"board file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise BoardError(f"cannot read board file {path}: {exc.strerror}") from exc
    unknown = sorted(set(raw) - set(_FIELDS) - set(_SECTIONS))
    if unknown:
        raise BoardError(
            f"board file {path}: unknown field(s) {', '.join(unknown)}",
            hint=f"allowed fields: {', '.join(_FIELDS)}; tables: {', '.join(_SECTIONS)}",
        )
    for key, spec in _FIELDS.items():
        if key not in raw:
            if spec[1]:
                raise BoardError(f"board file {path}: missing field '{key}'")
            continue
        _check_field(path, key, raw[key], spec)
    engines = raw["engines"]
    bad = [engine for engine in engines if engine not in ENGINES]
    if not engines or bad:
        raise BoardError(
            f"board file {path}: field 'engines' is {engines!r}, allowed: {', '.join(ENGINES)}"
        )
    if raw["default_engine"] not in engines:
        raise BoardError(
            f"board file {path}: default_engine '{raw['default_engine']}' is not in engines"
        )
    if raw["name"] != path.stem:
        raise BoardError(
            f"board file {path}: name '{raw['name']}' differs from the file name '{path.stem}'",
            hint="rename the file or the board so that they match",
        )
    sections = {key: raw[key] for key in _SECTIONS if key in raw}
    for key, value in sections.items():
        if not isinstance(value, dict):
            raise BoardError(f"board file {path}: '{key}' must be a table ([{key}])")
    values = {key: raw[key] for key in _FIELDS}
    values["engines"] = tuple(engines)
    values["supply_v"] = float(values["supply_v"])
    values["active_current_ma"] = float(values["active_current_ma"])
    return Board(path=path, sections=sections, **values)


def board_files(folder: Path | None = None) -> list[Path]:
    """The board data files, sorted by name.

    Without ``folder``: the boards shipped with mcu-ids, plus those in the folder named by the
    ``MCU_IDS_BOARDS_DIR`` environment variable, where a file of the same name wins.
    """
    if folder is not None:
        return sorted(Path(folder).glob("*.toml"))
    found = {path.stem: path for path in asset_dir("boards").glob("*.toml")}
    extra = os.environ.get(BOARDS_DIR_ENV)
    if extra:
        if not Path(extra).is_dir():
            raise BoardError(
                f"{BOARDS_DIR_ENV} names {extra}, which is not a folder",
                hint=f"unset {BOARDS_DIR_ENV} or point it at a folder of board .toml files",
            )
        found.update({path.stem: path for path in Path(extra).glob("*.toml")})
    return [found[name] for name in sorted(found)]


def load_boards(folder: Path | None = None) -> dict[str, Board]:
    """Every board in the registry, by name."""
    return {board.name: board for board in map(parse_board, board_files(folder))}


def get_board(name: str, folder: Path | None = None) -> Board:
    """One board by name, or a BoardError listing the known boards."""
    files = {path.stem: path for path in board_files(folder)}
    if name not in files:
        raise BoardError(
            f"unknown board '{name}'",
            hint=f"known boards: {', '.join(sorted(files))}; `mcu-ids boards` lists them",
        )
    return parse_board(files[name])
