"""Energy meters against simulated sources of known waveforms, and the board-data estimate.

Each source emits a square wave: current I_high while the marker is high for T_on, I_low
otherwise. The energy of one inference is then V x I_high x T_on exactly; the meters must find
it within the tolerance stated at each test (set by the source's own quantization).
"""

import os
import select
import threading
import time
import tty

import numpy as np
import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.errors import BoardError, DataError
from mcu_ids.hil.energy import (
    ESTIMATED,
    MEASURED,
    InaSerialMeter,
    PowerTrace,
    Ppk2Meter,
    estimate_energy,
    integrate_marker_spans,
    integrate_whole_trace,
    marker_spans,
    measure_while,
    read_trace_csv,
)

PERIODS = 40
LOW_SAMPLES = 30
HIGH_SAMPLES = 20


def _square_wave(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Current and marker of PERIODS periods, starting and ending low."""
    marker = np.tile(np.r_[np.zeros(LOW_SAMPLES), np.ones(HIGH_SAMPLES)], PERIODS)
    marker = np.r_[marker, np.zeros(LOW_SAMPLES)].astype(bool)
    return np.where(marker, high, low), marker


# --- integration and the CSV import ------------------------------------------------------------


def test_marker_spans_leave_out_cut_spans():
    marker = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    assert marker_spans(marker) == [(4, 7), (8, 9)]
    assert marker_spans(np.zeros(5, dtype=bool)) == []


def test_csv_trace_with_voltage_column(tmp_path):
    dt_s = 1e-4
    current_a, marker = _square_wave(0.010, 0.050)
    t = np.arange(len(marker)) * dt_s
    lines = ["t_s,current_mA,voltage_V,marker"]
    lines += [
        f"{ti:.6f},{ci * 1e3:.3f},3.3,{int(m)}"
        for ti, ci, m in zip(t, current_a, marker, strict=True)
    ]
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(lines) + "\n")
    result = integrate_marker_spans(read_trace_csv(path))
    assert result.kind == MEASURED
    assert result.inferences == PERIODS
    expected_uj = 3.3 * 0.050 * HIGH_SAMPLES * dt_s * 1e6
    assert result.uj_per_inference == pytest.approx(expected_uj, rel=1e-9)


def test_csv_trace_with_units_in_brackets_and_supply_given(tmp_path):
    # The layout of a Power Profiler export: milliseconds and microamperes, no voltage.
    current_a, marker = _square_wave(0.002, 0.030)
    lines = ["Timestamp(ms),Current(uA),marker"]
    lines += [
        f"{i * 0.01:.2f},{c * 1e6:.1f},{int(m)}"
        for i, (c, m) in enumerate(zip(current_a, marker, strict=True))
    ]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n")
    result = integrate_marker_spans(read_trace_csv(path, supply_v=1.8), inferences_per_span=4)
    expected_uj = 1.8 * 0.030 * HIGH_SAMPLES * 10e-6 * 1e6 / 4
    assert result.uj_per_inference == pytest.approx(expected_uj, rel=1e-6)
    assert result.inferences == 4 * PERIODS


def test_csv_errors_name_the_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("time_fortnights,current_mA\n1,2\n2,3\n")
    with pytest.raises(DataError, match="no known time unit"):
        read_trace_csv(path, supply_v=3.3)
    path.write_text("t_s,current_mA\n0,2\n1,3\n")
    with pytest.raises(DataError, match="no voltage column"):
        read_trace_csv(path)
    trace = read_trace_csv(path, supply_v=2.0)
    with pytest.raises(DataError, match="no marker"):
        integrate_marker_spans(trace)
    # Without a marker: the whole trace over a given count (2 samples of 1 s each).
    assert integrate_whole_trace(trace, 10).uj_per_inference == pytest.approx(
        (2.0 * 0.002 + 2.0 * 0.003) / 10 * 1e6
    )


def test_trace_rejects_times_that_go_back():
    with pytest.raises(DataError, match="do not increase"):
        PowerTrace([0.0, 2.0, 1.0], [0, 0, 0], 3.3, None, "test")


# --- the estimate ------------------------------------------------------------------------------


def test_estimate_from_board_data():
    board = get_board("nucleo-f446re")
    result = estimate_energy(board, 250.0, "cpu-cycles")
    assert result.kind == ESTIMATED
    assert result.uj_per_inference == pytest.approx(3.3 * 0.038 * 250.0)
    assert board.current_source in result.method
    assert "estimate of an estimate" not in result.method
    emulated = estimate_energy(get_board("qemu-f405"), 100.0, "emulated-instructions")
    assert "estimate of an estimate" in emulated.method


def test_estimate_refused_for_host():
    with pytest.raises(BoardError, match="no active current"):
        estimate_energy(get_board("host"), 10.0)


# --- INA219/INA226 over a serial bridge (a pty plays the bridge) --------------------------------


def _pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, os.ttyname(slave), slave


def test_ina_bridge_square_wave_over_pty():
    master, port, slave = _pty_pair()
    current_a, marker = _square_wave(0.012, 0.045)
    step_us = 100
    lines = ["t_us,bus_mV,current_uA,marker", "# INA226 bridge"]
    lines += [
        f"{1_000_000 + i * step_us},3300,{c * 1e6:.0f},{int(m)}"
        for i, (c, m) in enumerate(zip(current_a, marker, strict=True))
    ]
    lines.insert(5, "garbage line")

    def bridge():
        # A partial line first: the meter must drop what it joined mid-line.
        os.write(master, b"0,33")
        for start in range(0, len(lines), 50):
            os.write(master, ("\n".join(lines[start : start + 50]) + "\n").encode())
            time.sleep(0.002)
        time.sleep(0.3)

    meter = InaSerialMeter(port)
    try:
        _, result = measure_while(meter, bridge)
    finally:
        os.close(master)
        os.close(slave)
    assert result.inferences == PERIODS
    expected_uj = 3.3 * 0.045 * HIGH_SAMPLES * step_us
    # Currents are printed in whole microamperes: 0.5 µA in 45 mA.
    assert result.uj_per_inference == pytest.approx(expected_uj, rel=1e-4)


# --- Nordic PPK2 (a pty plays the PPK2; the real ppk2-api package reads it) ---------------------

PPK2_RANGE = 2
PPK2_R_OHM = 10.0  # calibration value the simulated PPK2 reports for range 2
PPK2_ADC_MULT = 1.8 / 163840
GET_META_DATA = 0x19
AVERAGE_START = 0x06
AVERAGE_STOP = 0x07
# Bytes of each command the PPK2 takes (opcode included), to split what arrives in one read.
PPK2_COMMAND_BYTES = {0x06: 1, 0x07: 1, 0x0C: 2, 0x0D: 3, 0x11: 2, 0x19: 1}


def _ppk2_sample(current_a: float, logic: int) -> bytes:
    """One 4-byte PPK2 sample: 14-bit ADC code (current = code x 4 x adc_mult / R), range, logic."""
    code = round(current_a * PPK2_R_OHM / (4 * PPK2_ADC_MULT))
    assert 0 <= code < 2**14
    word = code | (PPK2_RANGE << 14) | (logic << 24)
    return word.to_bytes(4, "little")


class _SimulatedPpk2(threading.Thread):
    """Answers the calibration request and streams samples between start and stop."""

    def __init__(self, master: int, stream: bytes):
        super().__init__(daemon=True)
        self.master = master
        self.stream = stream
        self.commands = []
        self.done = threading.Event()

    def run(self):
        metadata = (
            f"Calibrated: 1\nR{PPK2_RANGE}: {PPK2_R_OHM}\nGS{PPK2_RANGE}: 0\n"
            f"GI{PPK2_RANGE}: 1\nO{PPK2_RANGE}: 0\nHW: 9173\nmode: 2\nEND\n"
        ).encode()
        while not self.done.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            data = os.read(self.master, 64)
            while data:
                size = PPK2_COMMAND_BYTES[data[0]]
                command, data = data[:size], data[size:]
                self.commands.append(command)
                self._obey(command[0], metadata)

    def _obey(self, opcode: int, metadata: bytes) -> None:
        if opcode == GET_META_DATA:
            os.write(self.master, metadata)
        elif opcode == AVERAGE_START:
            # Odd-sized chunks so samples straddle reads, as they do on the USB link.
            for start in range(0, len(self.stream), 1001):
                os.write(self.master, self.stream[start : start + 1001])
                time.sleep(0.001)
        elif opcode == AVERAGE_STOP:
            self.done.set()


def test_ppk2_square_wave_over_pty():
    pytest.importorskip("ppk2_api")
    master, port, slave = _pty_pair()
    current_a, marker = _square_wave(0.004, 0.040)
    # D0 carries the marker; D3 toggles on its own and must not count.
    logic = marker.astype(int) | ((np.arange(len(marker)) % 7 == 0).astype(int) << 3)
    stream = b"".join(_ppk2_sample(c, int(b)) for c, b in zip(current_a, logic, strict=True))
    device = _SimulatedPpk2(master, stream)
    device.start()
    meter = Ppk2Meter(3.0, port)
    try:
        _, result = measure_while(meter, lambda: time.sleep(0.5))
    finally:
        device.done.set()
        device.join()
        os.close(master)
        os.close(slave)
    assert result.inferences == PERIODS
    assert result.details["samples"] == len(marker)
    expected_uj = 3.0 * 0.040 * HIGH_SAMPLES * 10e-6 * 1e6
    # ADC codes quantize the current to 4.4 µA: under 1e-4 of 40 mA.
    assert result.uj_per_inference == pytest.approx(expected_uj, rel=1e-4)
    # REGULATOR_SET: 3000 mV is 2232 steps over the 768 mV base, sent as (3 + 2232 // 256, rest).
    assert bytes([0x0D, 3 + 8, 2232 - 8 * 256]) in device.commands


def test_ppk2_refuses_a_voltage_it_cannot_source():
    with pytest.raises(BoardError, match="800-5000 mV"):
        Ppk2Meter(0.5, "/dev/null")


# --- energy in a benchmark run -------------------------------------------------------------------

TRACE_DT_S = 1e-3
TRACE_HIGH_MA = 50.0
TRACE_LOW_MA = 10.0
TRACE_V = 3.3
# Energy of one marker-high span: HIGH_SAMPLES samples of 50 mA at 3.3 V, 1 ms each.
SPAN_UJ = HIGH_SAMPLES * TRACE_HIGH_MA * 1e-3 * TRACE_V * TRACE_DT_S * 1e6


def write_square_wave_csv(path, *, voltage_column: bool = True, marker_column: bool = True):
    current_ma, marker = _square_wave(TRACE_LOW_MA, TRACE_HIGH_MA)
    header = ["t_ms", "current_mA"]
    header += ["voltage_V"] if voltage_column else []
    header += ["marker"] if marker_column else []
    lines = [",".join(header)]
    for i, (amps, level) in enumerate(zip(current_ma, marker, strict=True)):
        cells = [f"{i * TRACE_DT_S * 1e3:g}", f"{amps:g}"]
        cells += [f"{TRACE_V:g}"] if voltage_column else []
        cells += [str(int(level))] if marker_column else []
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_meter_choices_parse_and_bad_ones_say_what_is_allowed():
    from mcu_ids.errors import McuIdsError
    from mcu_ids.hil.energy import MeterChoice, parse_meter_choice

    assert parse_meter_choice("ppk2") == MeterChoice("ppk2", None)
    assert parse_meter_choice("ina:/dev/ttyACM1") == MeterChoice("ina", "/dev/ttyACM1")
    assert parse_meter_choice("trace:C:/x.csv") == MeterChoice("trace", "C:/x.csv")
    with pytest.raises(McuIdsError, match="unknown energy meter 'joulescope'.*trace:FILE.csv"):
        parse_meter_choice("joulescope")
    with pytest.raises(McuIdsError, match="needs the serial port") as raised:
        parse_meter_choice("ina")
    assert raised.value.hint


def test_trace_import_errors_come_before_the_run(tmp_path):
    from mcu_ids.hil.energy import RunEnergy, parse_meter_choice

    with pytest.raises(DataError, match="power trace .*missing.csv does not exist"):
        RunEnergy(parse_meter_choice(f"trace:{tmp_path / 'missing.csv'}"), 3.3)
    bad = tmp_path / "bad.csv"
    bad.write_text("when,amps\n0,1\n1,2\n")
    with pytest.raises(DataError, match="time"):
        RunEnergy(parse_meter_choice(f"trace:{bad}"), 3.3)
    no_voltage = write_square_wave_csv(tmp_path / "nov.csv", voltage_column=False)
    with pytest.raises(DataError, match="no voltage column") as raised:
        RunEnergy(parse_meter_choice(f"trace:{no_voltage}"), None)
    assert "--supply-v" in raised.value.hint


def test_imported_trace_shows_measured_beside_estimated(tmp_path):
    from mcu_ids.hil.energy import RunEnergy, add_energy_to_run, parse_meter_choice
    from mcu_ids.hil.report import write_bench_report
    from tests.test_html_report import CLASS_NAMES, HANDSHAKE, _meta, _records

    write_bench_report(
        tmp_path, _records(PERIODS), handshake=HANDSHAKE, class_names=CLASS_NAMES, meta=_meta(False)
    )
    trace = write_square_wave_csv(tmp_path / "power.csv")
    energy = RunEnergy(parse_meter_choice(f"trace:{trace}"), None)
    energy.start()
    energy.stop()
    report = add_energy_to_run(tmp_path, energy.result(PERIODS))
    kinds = [entry["kind"] for entry in report["energy"]]
    assert kinds == [ESTIMATED, MEASURED]
    assert report["energy"][1]["uj_per_inference"] == pytest.approx(SPAN_UJ, rel=1e-9)
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"| MEASURED | {SPAN_UJ:.4g} |" in markdown and "| ESTIMATED |" in markdown
    assert 'class="measured">MEASURED' in (tmp_path / "report.html").read_text(encoding="utf-8")
    # Without a marker, the whole trace (idle time included) is shared among the rows.
    plain = write_square_wave_csv(tmp_path / "plain.csv", marker_column=False)
    whole = RunEnergy(parse_meter_choice(f"trace:{plain}"), None).result(PERIODS)
    current_ma, _ = _square_wave(TRACE_LOW_MA, TRACE_HIGH_MA)
    expected = current_ma.sum() * 1e-3 * TRACE_V * TRACE_DT_S * 1e6 / PERIODS
    assert whole.uj_per_inference == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_bench_on_the_host_imports_a_trace(sample_workspace, tmp_path):
    from mcu_ids.devices import bench_device, build_firmware, flash_firmware, stop_device

    trace = write_square_wave_csv(tmp_path / "power.csv")
    build_firmware(sample_workspace, "host")
    flash_firmware(sample_workspace, "host")
    try:
        text = bench_device(
            sample_workspace,
            "host",
            None,
            limit=PERIODS,
            progress=False,
            energy_meter=f"trace:{trace}",
        )
    finally:
        stop_device(sample_workspace, "host")
    # The host has no estimate, the imported trace still gives the measured figure.
    assert f"| MEASURED | {SPAN_UJ:.4g} |" in text
    assert "| ESTIMATED | n/a | not estimated: board host has no active current" in text


def test_bench_refuses_an_unknown_meter_in_one_line(tmp_path, capsys):
    from mcu_ids.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--workdir", str(tmp_path), "bench", "--board", "host", "--energy-meter", "dmm"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown energy meter 'dmm'" in err[0]


# --- a trace CSV that cannot be used is named by file, line and column --------------------------


def write_trace_lines(path, lines, *, prefix=""):
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("column", [0, 1, 2])
def test_a_trace_cell_that_is_not_finite_is_refused_with_its_place(tmp_path, bad, column):
    cells = [["0", "10", "3.3"], ["1", "20", "3.3"], ["2", "30", "3.3"]]
    cells[1][column] = bad
    lines = ["t_ms,current_mA,voltage_V", "# recorded on the bench", *map(",".join, cells)]
    path = write_trace_lines(tmp_path / "power.csv", lines)
    name = lines[0].split(",")[column]
    with pytest.raises(DataError) as raised:
        read_trace_csv(path)
    assert f"{path}, line 4, column '{name}'" in raised.value.message
    assert "not a finite number" in raised.value.message
    assert raised.value.hint


def test_a_trace_cell_of_text_or_a_short_row_is_refused_with_its_place(tmp_path):
    path = write_trace_lines(tmp_path / "power.csv", ["t_ms,current_mA", "0,1", "1,abc", "2,3"])
    with pytest.raises(DataError) as raised:
        read_trace_csv(path, supply_v=3.3)
    assert f"{path}, line 3, column 'current_mA'" in raised.value.message
    assert "'abc' is not a number" in raised.value.message
    path = write_trace_lines(tmp_path / "cut.csv", ["t_ms,current_mA", "0,1", "1,2", "2"])
    with pytest.raises(DataError) as raised:
        read_trace_csv(path, supply_v=3.3)
    assert f"{path}, line 4 has 1 cell" in raised.value.message
    assert "current_mA" in raised.value.message and "delete" in raised.value.hint


def test_a_trace_with_a_byte_order_mark_reads(tmp_path):
    path = write_trace_lines(
        tmp_path / "excel.csv",
        ["t_us,current_uA,bus_mV", "0,1000,3300", "10,1000,3300"],
        prefix="\ufeff",
    )
    trace = read_trace_csv(path)
    assert trace.t_s == pytest.approx([0.0, 1e-5])
    assert trace.voltage_v == pytest.approx([3.3, 3.3])


def test_a_folder_given_as_trace_is_called_a_folder(tmp_path):
    from mcu_ids.hil.energy import RunEnergy, parse_meter_choice

    with pytest.raises(DataError, match="is a folder, not a CSV file") as raised:
        RunEnergy(parse_meter_choice(f"trace:{tmp_path}"), 3.3)
    assert "does not exist" not in raised.value.message
    write_square_wave_csv(tmp_path / "power.csv")
    with pytest.raises(DataError) as raised:
        RunEnergy(parse_meter_choice(f"trace:{tmp_path}"), 3.3)
    assert f"trace:{tmp_path / 'power.csv'}" in raised.value.hint


def test_a_missing_meter_target_is_hinted_with_a_real_example():
    from mcu_ids.errors import McuIdsError
    from mcu_ids.hil.energy import parse_meter_choice

    with pytest.raises(McuIdsError) as raised:
        parse_meter_choice("ina")
    assert "ina:/dev/ttyUSB0" in raised.value.hint
    with pytest.raises(McuIdsError, match="needs the CSV file") as raised:
        parse_meter_choice("trace:")
    assert "trace:power.csv" in raised.value.hint


def test_a_ppk2_port_that_does_not_exist_is_a_clean_error(tmp_path):
    pytest.importorskip("ppk2_api")
    from mcu_ids.errors import LinkError
    from mcu_ids.hil.energy import RunEnergy, parse_meter_choice

    port = tmp_path / "ttyNOPE"
    with pytest.raises(LinkError, match=f"cannot open the PPK2 on {port}") as raised:
        RunEnergy(parse_meter_choice(f"ppk2:{port}"), 3.3)
    assert "cable" in raised.value.hint and "ppk2:" in raised.value.hint


class _FlatMeter:
    """A live meter whose marker never rises (unwired)."""

    def start(self):
        pass

    def stop(self):
        return PowerTrace(np.arange(10) * 1e-3, np.full(10, 0.01), 3.3, np.zeros(10), "flat meter")


def test_a_trace_whose_marker_never_rises_is_refused_before_the_run(tmp_path):
    from mcu_ids.hil.energy import RunEnergy, parse_meter_choice

    flat = ["t_ms,current_mA,voltage_V,marker", *(f"{i},10,3.3,0" for i in range(10))]
    path = write_trace_lines(tmp_path / "flat.csv", flat)
    with pytest.raises(DataError, match="marker never goes high") as raised:
        RunEnergy(parse_meter_choice(f"trace:{path}"), None)
    assert "marker column" in raised.value.hint


def test_a_live_meter_without_spans_says_the_run_is_kept_and_how_to_add_energy():
    from mcu_ids.hil.energy import MeterChoice, RunEnergy

    energy = RunEnergy(MeterChoice("ina", "/dev/ttyUSB0"), 3.3, meter=_FlatMeter())
    energy.start()
    energy.stop()
    with pytest.raises(DataError, match="marker never goes high") as raised:
        energy.result(40)
    assert "results are kept" in raised.value.hint
    assert "mcu-ids bench --resume" in raised.value.hint
    assert "--energy-meter trace:" in raised.value.hint


# --- the Power Profiler app's export: digital channels in one D0-D7 column ---------------------


def _profiler_export(path, cell_of):
    """A Power Profiler CSV export; ``cell_of(marker, index)`` gives the D0-D7 cell of a sample."""
    current_a, marker = _square_wave(0.002, 0.030)
    lines = ["Timestamp(ms),Current(uA),D0-D7"]
    lines += [
        f"{i * 0.01:.2f},{c * 1e6:.3f},{cell_of(bool(m), i)}"
        for i, (c, m) in enumerate(zip(current_a, marker, strict=True))
    ]
    return write_trace_lines(path, lines)


def _bits(*high: int) -> str:
    return "".join("1" if channel in high else "0" for channel in range(8))


@pytest.mark.parametrize(
    "cell_of",
    [
        # D0 first; D3 toggles on its own and must not count.
        lambda m, i: _bits(*([0] if m else []), *([3] if i % 7 == 0 else [])),
        # The same channels as an integer, bit 0 for D0.
        lambda m, i: str(int(m) | (8 if i % 7 == 0 else 0)),
    ],
    ids=["bit-string", "integer"],
)
def test_the_profiler_export_takes_its_marker_from_d0(tmp_path, cell_of):
    path = _profiler_export(tmp_path / "export.csv", cell_of)
    result = integrate_marker_spans(read_trace_csv(path, supply_v=1.8))
    assert result.inferences == PERIODS
    expected_uj = 1.8 * 0.030 * HIGH_SAMPLES * 10e-6 * 1e6
    assert result.uj_per_inference == pytest.approx(expected_uj, rel=1e-6)


def test_the_profiler_export_refuses_what_it_cannot_read_as_d0(tmp_path):
    unrecorded = _profiler_export(tmp_path / "off.csv", lambda m, i: "--------")
    with pytest.raises(DataError, match=r"line 2, column 'D0-D7'.*D0 was not recorded"):
        read_trace_csv(unrecorded, supply_v=1.8)
    # Power Profiler before 4.1.3 wrote the string D7 first: D0 then reads as never changing.
    reversed_order = _profiler_export(tmp_path / "old.csv", lambda m, i: _bits(7) if m else _bits())
    with pytest.raises(DataError, match="D0 never changes, D7 does") as raised:
        read_trace_csv(reversed_order, supply_v=1.8)
    assert "4.1.3" in raised.value.hint
