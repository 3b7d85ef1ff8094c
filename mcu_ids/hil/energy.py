"""Energy per inference: an estimate from the board's data, or a measurement from a power meter.

Every figure is an :class:`EnergyResult` that says whether it was MEASURED or ESTIMATED, in
microjoules per inference, and how it was obtained.

Meters share one small interface (:class:`Meter`): ``start()`` begins sampling, ``stop()`` ends
it and returns a :class:`PowerTrace` (time, current, voltage, marker). The firmware raises its
marker pin while it runs inferences; :func:`integrate_marker_spans` integrates current x voltage
over each span where the marker is high and divides by the inferences in the span.

Meters:

- :class:`Ppk2Meter`: a Nordic Power Profiler Kit II (``ppk2-api`` package) in source-meter mode
  at the board's supply voltage, 100 000 samples/s; the board's marker pin goes to the PPK2's
  digital input D0 (another channel with ``marker_channel``).
- :class:`InaSerialMeter`: an INA219/INA226 read by a small microcontroller (an Arduino, say)
  that prints one CSV line per sample on a serial port::

      t_us,bus_mV,current_uA,marker
      1000,3300,12500,0
      1100,3301,41800,1

  ``t_us`` is the sample time in microseconds (any origin; wrapping is not allowed),
  ``bus_mV`` the bus voltage in millivolts, ``current_uA`` the current in microamperes (it may
  be negative, or fractional), ``marker`` 0 or 1, the level of the board's marker pin read by
  the bridge just before the sample. A line starting with ``#`` and the header line above are
  skipped; any other line that does not parse is counted and skipped.
- :func:`read_trace_csv`: a power trace saved by any instrument, as CSV with a header. Columns
  are found by name and carry their unit in the name: time ``t_s``/``time_us``/``Timestamp(ms)``
  (s, ms, us, ns), current ``current_mA``/``Current(uA)`` (A, mA, uA, nA), optionally voltage
  ``voltage_V``/``bus_mV`` (V, mV) and a ``marker`` column (0/1), or else the Power Profiler
  app's ``D0-D7`` column, whose D0 is the marker. Without a voltage column the caller gives the
  supply voltage; without a marker, the number of inferences in the whole trace.
"""

import csv
import logging
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mcu_ids.errors import BoardError, DataError, LinkError, McuIdsError

log = logging.getLogger(__name__)

MEASURED = "measured"
ESTIMATED = "estimated"
UJ_PER_J = 1e6
US_PER_S = 1e6
MA_PER_A = 1e3
MV_PER_V = 1e3
PPK2_SAMPLE_RATE_HZ = 100_000
PPK2_MIN_MV = 800
PPK2_MAX_MV = 5000
DEFAULT_MARKER_CHANNEL = 0
INA_FIELDS = ("t_us", "bus_mV", "current_uA", "marker")
INA_READ_TIMEOUT_S = 0.1

_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_CURRENT_UNITS = {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "µa": 1e-6, "na": 1e-9}
_VOLTAGE_UNITS = {"v": 1.0, "mv": 1e-3}
_TIME_NAMES = ("t", "time", "timestamp")
_CURRENT_NAMES = ("current", "i", "current_a")
_VOLTAGE_NAMES = ("voltage", "v", "bus", "vbus", "supply")
_MARKER_NAMES = ("marker", "gpio", "d0", "logic")
# The Power Profiler app exports its eight digital inputs as one column "D0-D7", each cell a
# string of eight states, D0 first (since the app's 4.1.3; earlier versions wrote D7 first);
# other tools write the inputs as an integer, bit 0 for D0.
_DIGITAL_COLUMN = "d0_d7"
DIGITAL_CHANNELS = 8
_DIGITAL_HIGH, _DIGITAL_LOW = "1", "0"
_DIGITAL_UNRECORDED, _DIGITAL_MIXED = "-", "X"
NO_SPANS = "the marker never goes high and low again within the trace"
# "current_mA", "Current(uA)", "current [mA]", "time us"
_HEADER = re.compile(r"^([a-z0-9]+)(?:[\s_]*[\(\[]\s*([a-zµ]+)\s*[\)\]]|[\s_]+([a-zµ]+))?$")


@dataclass
class PowerTrace:
    """Samples of a power meter: time (s), current (A), voltage (V), marker level (bool)."""

    t_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    marker: np.ndarray | None
    source: str

    def __post_init__(self):
        self.t_s = np.asarray(self.t_s, dtype=np.float64)
        self.current_a = np.asarray(self.current_a, dtype=np.float64)
        self.voltage_v = np.broadcast_to(
            np.asarray(self.voltage_v, dtype=np.float64), self.t_s.shape
        ).copy()
        if self.marker is not None:
            self.marker = np.asarray(self.marker).astype(bool)
        lengths = {len(self.t_s), len(self.current_a), len(self.voltage_v)}
        if self.marker is not None:
            lengths.add(len(self.marker))
        if len(lengths) != 1:
            raise DataError(f"{self.source}: time, current, voltage and marker differ in length")
        if len(self.t_s) > 1 and np.any(np.diff(self.t_s) <= 0):
            raise DataError(
                f"{self.source}: sample times do not increase",
                hint="a meter clock that wraps or resets splits the trace; record shorter traces",
            )

    def sample_durations(self) -> np.ndarray:
        """How long each sample stands for: the gap to the next (the last repeats the median)."""
        if len(self.t_s) < 2:
            return np.zeros_like(self.t_s)
        gaps = np.diff(self.t_s)
        return np.append(gaps, np.median(gaps))


@dataclass
class EnergyResult:
    """Energy per inference and how it was obtained."""

    kind: str  # MEASURED or ESTIMATED
    uj_per_inference: float
    method: str
    source: str
    inferences: int = 0
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Meter(Protocol):
    """A power meter that samples between ``start()`` and ``stop()``."""

    def start(self) -> None: ...

    def stop(self) -> PowerTrace: ...


# --- integration -------------------------------------------------------------------------------


def marker_spans(marker: np.ndarray) -> list[tuple[int, int]]:
    """``(first, end)`` sample indices of each run of high marker samples (end exclusive).

    A run touching the first or last sample is cut by the recording, not by the firmware, so it
    is left out.
    """
    marker = np.asarray(marker, dtype=bool)
    if marker.size == 0:
        return []
    edges = np.diff(marker.astype(np.int8))
    starts = list(np.flatnonzero(edges == 1) + 1)
    ends = list(np.flatnonzero(edges == -1) + 1)
    if marker[0]:
        ends = ends[1:]
        log.info("the trace starts inside a marker span; that span is not counted")
    if marker[-1]:
        starts = starts[:-1]
        log.info("the trace ends inside a marker span; that span is not counted")
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def integrate_marker_spans(trace: PowerTrace, inferences_per_span: int = 1) -> EnergyResult:
    """Energy per inference: integral of current x voltage over marker-high samples.

    Each sample counts for the time to the next sample (rectangle rule), which is exact for a
    meter that averages over its sampling interval as the PPK2 and the INA chips do.
    """
    if trace.marker is None:
        raise DataError(
            f"{trace.source} has no marker channel",
            hint="wire the board's marker pin to the meter, or give the inference count of the "
            "whole trace (integrate_whole_trace)",
        )
    if inferences_per_span < 1:
        raise DataError(f"inferences per span must be at least 1, got {inferences_per_span}")
    spans = marker_spans(trace.marker)
    if not spans:
        raise DataError(
            f"{trace.source}: {NO_SPANS}",
            hint="check the marker wiring and that the benchmark ran while the meter sampled",
        )
    power_w = trace.current_a * trace.voltage_v
    energy_j = power_w * trace.sample_durations()
    durations = trace.sample_durations()
    span_j = np.array([energy_j[a:b].sum() for a, b in spans])
    span_s = np.array([durations[a:b].sum() for a, b in spans])
    inferences = len(spans) * inferences_per_span
    uj = float(span_j.sum() / inferences * UJ_PER_J)
    return EnergyResult(
        kind=MEASURED,
        uj_per_inference=uj,
        method=f"integral of current x voltage over {len(spans)} marker-high spans of "
        f"{inferences_per_span} inference(s) each",
        source=trace.source,
        inferences=inferences,
        details={
            "spans": len(spans),
            "inferences_per_span": inferences_per_span,
            "span_uj_median": float(np.median(span_j) * UJ_PER_J),
            "span_us_median": float(np.median(span_s) * US_PER_S),
            "mean_current_ma_in_spans": float(
                np.mean(np.concatenate([trace.current_a[a:b] for a, b in spans])) * MA_PER_A
            ),
            "samples": int(len(trace.t_s)),
        },
    )


def integrate_whole_trace(trace: PowerTrace, inferences: int) -> EnergyResult:
    """Energy per inference for a trace without a marker: all of it, over ``inferences``."""
    if inferences < 1:
        raise DataError(f"the trace needs a positive inference count, got {inferences}")
    total_j = float(np.sum(trace.current_a * trace.voltage_v * trace.sample_durations()))
    return EnergyResult(
        kind=MEASURED,
        uj_per_inference=total_j / inferences * UJ_PER_J,
        method="integral of current x voltage over the whole trace (no marker; includes time "
        "between inferences)",
        source=trace.source,
        inferences=inferences,
        details={"samples": int(len(trace.t_s)), "trace_s": float(np.ptp(trace.t_s))},
    )


# --- estimate ----------------------------------------------------------------------------------


def estimate_energy(board, latency_us: float, tick_kind: str = "") -> EnergyResult:
    """Supply voltage x the board's active current x the latency of one inference.

    ``board`` is a :class:`mcu_ids.build.boards.Board`. The host has no current figure and is
    refused; on emulated boards the latency counts emulated instructions, so the result is an
    estimate built on an estimate, and says so.
    """
    if board.active_current_ma <= 0:
        raise BoardError(
            f"board {board.name} has no active current figure ({board.current_source})",
        )
    if not latency_us or latency_us <= 0:
        raise DataError(f"cannot estimate energy from a latency of {latency_us} µs")
    uj = board.supply_v * (board.active_current_ma / MA_PER_A) * latency_us
    method = (
        f"{board.supply_v:g} V x {board.active_current_ma:g} mA x {latency_us:.4g} µs median "
        f"latency; current from: {board.current_source}"
    )
    if board.emulated:
        method += (
            "; the latency is emulated instructions at one per clock cycle, not the "
            "timing of a real chip, so this is an estimate of an estimate"
        )
    return EnergyResult(
        kind=ESTIMATED,
        uj_per_inference=uj,
        method=method,
        source=f"board data of {board.name}",
        details={
            "supply_v": board.supply_v,
            "active_current_ma": board.active_current_ma,
            "latency_us": latency_us,
            "tick_kind": tick_kind,
            "emulated": board.emulated,
        },
    )


# --- power trace CSV ---------------------------------------------------------------------------


def _split_header(name: str) -> tuple[str, str]:
    text = name.strip().lower().replace("-", "_")
    match = _HEADER.match(text)
    if not match:
        return text, ""
    return match.group(1), match.group(2) or match.group(3) or ""


def _find_column(header: list[str], names, units: dict, what: str, path, required: bool):
    for index, raw in enumerate(header):
        quantity, unit = _split_header(raw)
        if quantity not in names:
            continue
        if units is None:
            return index, 1.0
        if unit not in units:
            raise DataError(
                f"{path}: column '{raw}' has no known {what} unit",
                hint=f"name the unit in the header, one of: {', '.join(units)} "
                f"(e.g. '{names[0]}_{next(iter(units))}')",
            )
        return index, units[unit]
    if required:
        raise DataError(
            f"{path}: no {what} column in the header {header}",
            hint=f"name it with its unit, e.g. '{names[0]}_{next(iter(units))}'; units: "
            f"{', '.join(units)}",
        )
    return None, None


def _find_digital_column(header: list[str]) -> int | None:
    """Index of the Power Profiler's ``D0-D7`` column, or None."""
    for index, raw in enumerate(header):
        if raw.strip().lower().replace("-", "_").replace(" ", "") == _DIGITAL_COLUMN:
            return index
    return None


def _read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of every row but blank and ``#`` lines; a BOM is dropped."""
    if path.is_dir():
        csv_files = sorted(path.glob("*.csv"))
        example = path / csv_files[0].name if csv_files else path / "power.csv"
        raise DataError(
            f"power trace {path} is a folder, not a CSV file",
            hint=f"give the CSV file exported by the meter, e.g. trace:{example}",
        )
    if not path.exists():
        raise DataError(
            f"power trace {path} does not exist",
            hint="give the CSV file exported by the meter, e.g. trace:power.csv",
        )
    rows = []
    try:
        # utf-8-sig: spreadsheet programs start their CSV exports with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if row and not row[0].startswith("#"):
                    rows.append((reader.line_num, row))
    except OSError as exc:
        raise DataError(f"cannot read power trace {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"power trace {path} is not a CSV text file: {exc}",
            hint="export the trace from the meter's software as CSV",
        ) from exc
    return rows


def _check_row_lengths(path: Path, header: list[str], body, columns: list[int]) -> None:
    """Every row has the cells of the columns read; a cut-off line is named."""
    last = max(columns)
    for line, row in body:
        if len(row) <= last:
            missing = ", ".join(f"'{header[c]}'" for c in columns if c >= len(row))
            raise DataError(
                f"{path}, line {line} has {len(row)} cell(s), the header {len(header)}: "
                f"no {missing}",
                hint="delete that line, as a recording cut off mid-line leaves one, and import "
                "the trace again",
            )


def _cell_problem(cell: str) -> str | None:
    """What keeps a cell from being a sample value, or None."""
    try:
        value = float(cell)
    except ValueError:
        return f"{cell!r} is not a number"
    if not math.isfinite(value):
        return f"{cell!r} is not a finite number"
    return None


def _column_values(path: Path, header: list[str], body, column: int) -> np.ndarray:
    """The column as floats; the first cell that is not a finite number is named."""
    cells = [row[column] for _, row in body]
    try:
        values = np.array(cells, dtype=np.float64)
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    for (line, _), cell in zip(body, cells, strict=True):
        problem = _cell_problem(cell)
        if problem:
            raise DataError(
                f"{path}, line {line}, column '{header[column]}': {problem}",
                hint="a meter writes nan or inf for a sample it lost; correct or delete that "
                "line and import the trace again",
            )
    raise AssertionError("unreachable: a column that did not convert has a bad cell")


def _digital_states(cell: str) -> str:
    """A ``D0-D7`` cell as eight states, D0 first: a string of them, or an integer (bit 0: D0)."""
    text = cell.strip()
    states = {_DIGITAL_HIGH, _DIGITAL_LOW, _DIGITAL_UNRECORDED, _DIGITAL_MIXED}
    if len(text) == DIGITAL_CHANNELS and set(text.upper()) <= states:
        return text.upper()
    bits = int(text)
    if not 0 <= bits < 2**DIGITAL_CHANNELS:
        raise ValueError(text)
    return "".join(str((bits >> channel) & 1) for channel in range(DIGITAL_CHANNELS))


def _digital_marker(path: Path, header: list[str], body, column: int) -> np.ndarray:
    """D0 of the Power Profiler's ``D0-D7`` column, as the marker."""
    name = header[column]
    levels = []
    for line, row in body:
        try:
            states = _digital_states(row[column])
        except ValueError:
            raise DataError(
                f"{path}, line {line}, column '{name}': {row[column]!r} is neither eight "
                "states D0 first (like 10000000) nor an integer of the inputs",
                hint="correct or delete that line and import the trace again",
            ) from None
        if states[0] == _DIGITAL_UNRECORDED:
            raise DataError(
                f"{path}, line {line}, column '{name}': D0 was not recorded",
                hint="record the digital channels with the marker pin on D0, or delete the "
                "column to share the whole trace among the rows answered",
            )
        if states[0] == _DIGITAL_MIXED:
            raise DataError(
                f"{path}, line {line}, column '{name}': D0 is both low and high in one "
                "averaged sample",
                hint="export the trace at full resolution (every sample, not averaged)",
            )
        levels.append(states)
    marker = np.array([states[0] == _DIGITAL_HIGH for states in levels])
    if marker.min() == marker.max():
        moving = [
            channel
            for channel in range(1, DIGITAL_CHANNELS)
            if len({states[channel] for states in levels}) > 1
        ]
        if DIGITAL_CHANNELS - 1 in moving:
            raise DataError(
                f"{path}, column '{name}': D0 never changes, D{DIGITAL_CHANNELS - 1} does",
                hint="the marker is read from D0; the Power Profiler app before 4.1.3 wrote the "
                "states D7 first: export the trace again with a newer version",
            )
    return marker


def read_trace_csv(path: Path, *, supply_v: float | None = None) -> PowerTrace:
    """Read a power trace CSV (units in the column names; see the module docstring)."""
    path = Path(path)
    rows = _read_csv_rows(path)
    if len(rows) < 2:
        raise DataError(f"{path} holds no samples", hint="record a trace first")
    (_, header), body = rows[0], rows[1:]
    t_col, t_mul = _find_column(header, _TIME_NAMES, _TIME_UNITS, "time", path, True)
    i_col, i_mul = _find_column(header, _CURRENT_NAMES, _CURRENT_UNITS, "current", path, True)
    v_col, v_mul = _find_column(header, _VOLTAGE_NAMES, _VOLTAGE_UNITS, "voltage", path, False)
    m_col, _ = _find_column(header, _MARKER_NAMES, None, "marker", path, False)
    d_col = _find_digital_column(header) if m_col is None else None
    if v_col is None and supply_v is None:
        raise DataError(
            f"{path} has no voltage column",
            hint="add a voltage column (voltage_V or voltage_mV) or give the supply voltage "
            "(--supply-v)",
        )
    columns = [c for c in (t_col, i_col, v_col, m_col, d_col) if c is not None]
    _check_row_lengths(path, header, body, columns)
    t_s = _column_values(path, header, body, t_col) * t_mul
    current_a = _column_values(path, header, body, i_col) * i_mul
    if v_col is not None:
        voltage = _column_values(path, header, body, v_col) * v_mul
    else:
        voltage = np.full(len(body), float(supply_v))
    marker = None
    if m_col is not None:
        marker = _column_values(path, header, body, m_col) > 0
    elif d_col is not None:
        marker = _digital_marker(path, header, body, d_col)
    return PowerTrace(t_s, current_a, voltage, marker, str(path))


# --- INA219 / INA226 over a serial bridge ------------------------------------------------------


def parse_ina_lines(lines, source: str = "INA serial bridge") -> PowerTrace:
    """Turn ``t_us,bus_mV,current_uA,marker`` lines into a trace; bad lines are counted."""
    samples = []
    bad = 0
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#") or text.replace(" ", "") == ",".join(INA_FIELDS):
            continue
        parts = text.split(",")
        try:
            if len(parts) != len(INA_FIELDS):
                raise ValueError(text)
            samples.append((float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])))
        except ValueError:
            bad += 1
    if bad:
        log.warning("%s: skipped %d line(s) that are not %s", source, bad, ",".join(INA_FIELDS))
    if not samples:
        raise DataError(
            f"{source}: no sample lines",
            hint=f"the bridge must print lines of {','.join(INA_FIELDS)}",
        )
    data = np.array(samples)
    return PowerTrace(
        data[:, 0] / US_PER_S,
        data[:, 2] * 1e-6,
        data[:, 1] / MV_PER_V,
        data[:, 3] > 0,
        source,
    )


class InaSerialMeter:
    """An INA219/INA226 behind a serial bridge that prints ``t_us,bus_mV,current_uA,marker``."""

    def __init__(self, port: str, baud: int = 115200):
        self.port = port
        self.baud = baud
        self._lines: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial = None

    def start(self) -> None:
        import serial

        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=INA_READ_TIMEOUT_S)
        except serial.SerialException as exc:
            raise LinkError(
                f"cannot open the INA bridge on {self.port}: {exc}",
                hint="check the port name and that no other program holds it",
            ) from exc
        self._serial.reset_input_buffer()
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, name="ina-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        while not self._stop.is_set():
            chunk = self._serial.read(self._serial.in_waiting or 1)
            if not chunk:
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            self._lines.extend(line.decode("ascii", "replace") for line in complete)

    def stop(self) -> PowerTrace:
        if self._thread is None:
            raise McuIdsError("the INA meter was stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._serial.close()
        # The first line may be the tail of one printed before the port was opened.
        return parse_ina_lines(self._lines[1:], f"INA bridge on {self.port}")


# --- Nordic PPK2 -------------------------------------------------------------------------------


class Ppk2Meter:
    """A Nordic PPK2 powering the board in source-meter mode, marker pin on a digital input.

    ``api`` is a ``ppk2_api.ppk2_api.PPK2_API`` (or a subclass); it is created from ``port``
    when not given.
    """

    def __init__(
        self,
        supply_v: float,
        port: str | None = None,
        *,
        marker_channel: int = DEFAULT_MARKER_CHANNEL,
        api=None,
        poll_s: float = 0.01,
    ):
        supply_mv = round(supply_v * MV_PER_V)
        if not PPK2_MIN_MV <= supply_mv <= PPK2_MAX_MV:
            raise BoardError(
                f"the PPK2 sources {PPK2_MIN_MV}-{PPK2_MAX_MV} mV; the board needs {supply_mv} mV",
                hint="power the board another way and use the PPK2 as an ampere meter",
            )
        self.supply_mv = supply_mv
        self.port = port
        self.marker_channel = marker_channel
        self.poll_s = poll_s
        self._api = api
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self):
        """Find and open the PPK2 (once); a missing package or device raises here."""
        if self._api is not None:
            return self._api
        try:
            from ppk2_api.ppk2_api import PPK2_API
        except ImportError as exc:
            raise McuIdsError(
                "the PPK2 meter needs the ppk2-api package", hint="pip install ppk2-api"
            ) from exc
        import serial

        port = self.port or next(iter(PPK2_API.list_devices()), None)
        if port is None:
            raise LinkError("no PPK2 found", hint="plug it in, or give its port")
        try:
            self._api = PPK2_API(port, timeout=1, write_timeout=1, exclusive=True)
        except serial.SerialException as exc:
            raise LinkError(
                f"cannot open the PPK2 on {port}: {exc}",
                hint="check the USB cable, close the Power Profiler app if it holds the port, "
                "and give the PPK2's port, e.g. --energy-meter ppk2:/dev/ttyACM0",
            ) from exc
        return self._api

    def start(self) -> None:
        api = self.connect()
        if not api.get_modifiers():
            raise LinkError(
                f"the PPK2 on {self.port} did not send its calibration",
                hint="unplug and replug the PPK2; close nRF Connect Power Profiler if it is open",
            )
        api.use_source_meter()
        api.set_source_voltage(self.supply_mv)
        api.toggle_DUT_power("ON")
        api.start_measuring()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="ppk2-reader", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            data = self._api.get_data()
            if data:
                self._chunks.append(data)
            time.sleep(self.poll_s)

    def stop(self) -> PowerTrace:
        if self._thread is None:
            raise McuIdsError("the PPK2 meter was stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._api.stop_measuring()
        tail = self._api.get_data()
        if tail:
            self._chunks.append(tail)
        return self.decode(b"".join(self._chunks))

    def decode(self, raw: bytes) -> PowerTrace:
        """Samples (µA from the package's calibrated conversion) and the marker channel."""
        current_ua, bits = self._api.get_samples(raw)
        n = min(len(current_ua), len(bits))
        marker = (np.asarray(bits[:n], dtype=np.int64) >> self.marker_channel) & 1
        return PowerTrace(
            np.arange(n) / PPK2_SAMPLE_RATE_HZ,
            np.asarray(current_ua[:n]) * 1e-6,
            self.supply_mv / MV_PER_V,
            marker,
            f"PPK2 on {self.port or 'auto'} (source mode, {self.supply_mv} mV)",
        )


def measure_while(meter: Meter, work, inferences_per_span: int = 1):
    """Run ``work()`` while ``meter`` samples; return its result and the energy per inference."""
    meter.start()
    try:
        outcome = work()
    finally:
        trace = meter.stop()
    return outcome, integrate_marker_spans(trace, inferences_per_span)


# --- a meter chosen on the command line --------------------------------------------------------

METER_KINDS = ("ppk2", "ina", "trace")
METER_USAGE = "ppk2, ppk2:PORT, ina:PORT or trace:FILE.csv"
# What a meter needs after the colon, and an example of it.
_METER_TARGETS = {
    "ina": ("serial port of the INA bridge", "ina:/dev/ttyUSB0"),
    "trace": ("CSV file of the trace", "trace:power.csv"),
}
# Marker spans and answered rows may differ by a few (a span cut by the recording's ends).
SPAN_COUNT_TOLERANCE = 0.02


@dataclass(frozen=True)
class MeterChoice:
    """What ``--energy-meter`` asked for: a meter kind and its port or file (or None)."""

    kind: str
    target: str | None = None

    @property
    def live(self) -> bool:
        """Whether the meter samples during the run (rather than a trace recorded apart)."""
        return self.kind != "trace"


def parse_meter_choice(text: str) -> MeterChoice:
    """``ppk2``, ``ppk2:PORT``, ``ina:PORT`` or ``trace:FILE.csv`` as a :class:`MeterChoice`."""
    kind, _, target = text.strip().partition(":")
    kind = kind.lower()
    if kind not in METER_KINDS:
        raise McuIdsError(
            f"unknown energy meter {text!r}; allowed: {METER_USAGE}",
            hint="e.g. --energy-meter ina:/dev/ttyACM0 or --energy-meter trace:power.csv",
        )
    if kind != "ppk2" and not target:
        what, example = _METER_TARGETS[kind]
        raise McuIdsError(f"--energy-meter {kind} needs the {what}", hint=f"write it as {example}")
    return MeterChoice(kind, target or None)


class RunEnergy:
    """The energy figure of one benchmark run, from a live meter or an imported trace.

    Built before the run so that a missing file, unreadable columns or an absent meter stop
    the command before any row is sent. ``start()``/``stop()`` bracket the run (nothing to do
    for a trace); :meth:`result` integrates once the number of answered rows is known.
    """

    def __init__(self, choice: MeterChoice, supply_v: float | None, *, meter: Meter | None = None):
        self.choice = choice
        self.supply_v = supply_v
        self.trace: PowerTrace | None = None
        self.meter: Meter | None = meter
        if choice.kind == "trace":
            path = Path(choice.target)
            self.trace = read_trace_csv(path, supply_v=supply_v)
            if self.trace.marker is not None and not marker_spans(self.trace.marker):
                raise DataError(
                    f"{path}: {NO_SPANS}",
                    hint="check that the marker pin was wired and recorded; or delete the "
                    "marker column to share the whole trace among the rows answered",
                )
        elif self.meter is None:
            self.meter = self._open_meter()

    def _open_meter(self) -> Meter:
        if self.choice.kind == "ina":
            return InaSerialMeter(self.choice.target)
        if self.supply_v is None:
            raise BoardError(
                "the PPK2 needs the voltage to supply the board",
                hint="give --supply-v (the board's supply voltage in volts)",
            )
        meter = Ppk2Meter(self.supply_v, self.choice.target)
        meter.connect()  # a missing package or device is reported now, not after the run
        return meter

    def start(self) -> None:
        """Begin sampling (a live meter only)."""
        if self.meter is not None:
            self.meter.start()

    def stop(self) -> None:
        """End sampling and keep the trace (a live meter only)."""
        if self.meter is not None:
            self.trace = self.meter.stop()

    def abandon(self) -> None:
        """Stop a live meter after a failed run; its own errors are logged, not raised."""
        if self.meter is None:
            return
        try:
            self.meter.stop()
        except McuIdsError as exc:
            log.warning("the energy meter could not be stopped cleanly: %s", exc)

    def result(self, inferences: int) -> EnergyResult:
        """Energy per inference of the run's ``inferences`` answered rows.

        With a marker channel each span is one inference of the accuracy stream; without one
        the whole trace is divided by ``inferences`` (and the method says that it includes the
        time between inferences).
        """
        if self.trace is None:
            raise McuIdsError("no power trace: the meter was not started and stopped")
        if self.trace.marker is None:
            return integrate_whole_trace(self.trace, inferences)
        try:
            energy = integrate_marker_spans(self.trace, inferences_per_span=1)
        except DataError as exc:
            # The rows have streamed by now (a trace file is checked before the run).
            raise DataError(
                exc.message,
                hint="the run's results are kept in its folder, named in the log above; check "
                "the marker wiring and run the bench again, or add a trace recorded during this "
                "run with `mcu-ids bench --resume RUN_DIR --energy-meter trace:power.csv` and "
                "the run's --board and --port",
            ) from exc
        spans = energy.details["spans"]
        energy.details["rows_answered"] = int(inferences)
        if inferences and abs(spans - inferences) > SPAN_COUNT_TOLERANCE * inferences + 2:
            log.warning(
                "%s: %d marker spans for %d answered rows; the trace may cover another run",
                self.trace.source,
                spans,
                inferences,
            )
        return energy


def add_energy_to_run(run_dir: Path, result: EnergyResult) -> dict:
    """Save a measured result into the run folder and write its reports again."""
    from mcu_ids.hil.report import rewrite_bench_report

    save_energy(run_dir, result)
    log.info("%s: %.4g µJ per inference (%s)", run_dir, result.uj_per_inference, result.kind)
    return rewrite_bench_report(run_dir)


# --- run folders -------------------------------------------------------------------------------

ENERGY_FILE = "energy.json"


def load_energy(run_dir: Path) -> list[dict]:
    """Measured energy results saved in a run folder (none: an empty list)."""
    import json

    path = Path(run_dir) / ENERGY_FILE
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataError(f"{path} is not a list of energy results: {exc}") from exc


def save_energy(run_dir: Path, result: EnergyResult) -> Path:
    """Add a measured result to the run folder's ``energy.json``."""
    from mcu_ids.fileio import write_json

    entries = load_energy(run_dir) + [result.to_dict()]
    return write_json(Path(run_dir) / ENERGY_FILE, entries)


def estimate_for_report(report: dict) -> dict:
    """The board-data estimate for a run's report, or why there is none."""
    from mcu_ids.build.boards import get_board

    meta = report.get("meta", {})
    device = report.get("latency", {}).get("device", {})
    try:
        board = get_board(meta.get("board") or report.get("handshake", {}).get("board", ""))
        latency_us = device.get("us", {}).get("median")
        return estimate_energy(board, latency_us, device.get("tick_kind", "")).to_dict()
    except McuIdsError as exc:
        return {"kind": ESTIMATED, "uj_per_inference": None, "method": f"not estimated: {exc}"}
