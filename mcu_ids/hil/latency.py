"""Latency the MLPerf Tiny way (warm-up, then timed windows) and per-layer cost, on a device.

The accuracy stream in ``harness`` times each inference as it goes; these requests run after it,
on one row, with nothing else arriving on the link, so their figures repeat where the counter
allows (to one tick per window under QEMU).
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcu_ids.errors import DataError, LinkError, McuIdsError
from mcu_ids.fileio import write_json
from mcu_ids.hil import protocol
from mcu_ids.hil.harness import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S, HELLO_ATTEMPTS
from mcu_ids.hil.protocol import DeviceLink, ErrorReply, Hello

log = logging.getLogger(__name__)

LATENCY_WINDOWS_FILE = "latency_windows.json"
LAYERS_FILE = "layers.json"
DEFAULT_WARMUP = 10
DEFAULT_WINDOWS = 5
DEFAULT_PER_WINDOW = 50
PROFILE_REPEATS = 5
# A short window first tells how long one inference takes, so the timeout can follow the work.
CALIBRATION_INFERENCES = 5
# The timeout of a WINDOW request allows this many times the calibrated time of its inferences.
WINDOW_TIMEOUT_FACTOR = 4.0
_RESEND_ERRORS = (protocol.ERR_BAD_CRC, protocol.ERR_BAD_LENGTH, protocol.ERR_TRUNCATED)
_NOT_AVAILABLE_ERRORS = (protocol.ERR_UNSUPPORTED, protocol.ERR_UNKNOWN_TYPE)


def _exchange(link: DeviceLink, build, reply_type: int, *, timeout_s: float, attempts: int, what):
    """Send a request until its reply or an ERROR for it arrives; resend on silence or damage.

    ``build(seq)`` makes the frame. Returns the reply Frame or the device's ErrorReply.
    """
    reason = "no attempt made"
    for _ in range(max(1, attempts)):
        seq = link.next_seq()
        link.send(build(seq))
        deadline = time.perf_counter() + timeout_s
        reason = f"no answer within {timeout_s:.3g} s"
        while (remaining := deadline - time.perf_counter()) > 0:
            event = link.receive(remaining)
            if event is None or event.seq != seq:
                continue
            if isinstance(event, protocol.Fault):
                reason = f"the answer arrived damaged ({protocol.ERROR_NAMES[event.code]})"
                break
            if event.type == reply_type:
                return event
            if event.type == protocol.ERROR:
                error = ErrorReply.decode(event.payload)
                if error.code not in _RESEND_ERRORS:
                    return error
                reason = f"the device reported {error.name}"
                break
        log.info("%s on %s: %s; sending it again", what, link.port, reason)
    raise LinkError(
        f"{what} got no valid answer on {link.port} after {attempts} attempts: {reason}",
        hint="check the cable, or lower the baud rate",
    )


def _row_bytes(input_row: np.ndarray, hello: Hello) -> bytes:
    row = np.ascontiguousarray(input_row, dtype=np.int8).reshape(-1)
    if row.size != hello.n_features:
        raise DataError(
            f"the latency row has {row.size} values, the device takes {hello.n_features}",
            hint="pass one quantized test row",
        )
    return row.tobytes()


@dataclass
class LatencyWindows:
    """Ticks of latency windows: each ran ``per_window`` inferences of one row back to back."""

    warmup: int
    per_window: int
    window_ticks: list[int]
    tick_hz: int
    tick_kind: str
    board: str = ""
    engine: str = ""
    cpu_hz: int = 0

    @property
    def us_per_tick(self) -> float | None:
        from mcu_ids.hil.html_report import us_per_tick

        return us_per_tick(self.tick_kind, self.tick_hz, self.cpu_hz, self.board)

    @property
    def per_inference_ticks(self) -> np.ndarray:
        return np.asarray(self.window_ticks, dtype=np.float64) / self.per_window

    @property
    def throughput_per_s(self) -> float | None:
        """Inferences per second over all windows, from the time a tick stands for."""
        total = sum(self.window_ticks)
        if not self.us_per_tick or not total:
            return None
        return self.per_window * len(self.window_ticks) * 1e6 / (total * self.us_per_tick)

    def to_dict(self) -> dict:
        """Summary and a row per window, in the shape the reports read (``windows`` is the list)."""
        from mcu_ids.hil.report import summarize

        per_inference = self.per_inference_ticks
        us = self.us_per_tick
        rows = []
        for number, ticks in enumerate(self.window_ticks, start=1):
            row = {"window": number, "ticks": int(ticks)}
            row["ticks_per_inference"] = ticks / self.per_window
            if us is not None:
                row["us_per_inference"] = ticks / self.per_window * us
            rows.append(row)
        out = {
            "available": True,
            "board": self.board,
            "engine": self.engine,
            "warmup": self.warmup,
            "window_count": len(self.window_ticks),
            "per_window": self.per_window,
            "tick_kind": self.tick_kind,
            "tick_hz": self.tick_hz,
            "window_ticks": [int(t) for t in self.window_ticks],
            "per_inference_ticks": summarize(per_inference),
            "throughput_per_s": self.throughput_per_s,
            "windows": rows,
        }
        if us is not None:
            out["per_inference_us"] = summarize(per_inference * us)
        return out


def _check_window_request(warmup: int, windows: int, per_window: int) -> None:
    bounds = (
        ("warm-up inferences", warmup, 0, protocol.MAX_WARMUP),
        ("windows", windows, 1, protocol.MAX_WINDOWS),
        ("inferences per window", per_window, 1, protocol.MAX_PER_WINDOW),
    )
    for name, value, low, high in bounds:
        if not low <= value <= high:
            raise McuIdsError(
                f"{value} {name} is outside {low}..{high}",
                hint=f"ask for {low} to {high} {name} (one reply frame holds the window ticks)",
            )


def _open(link_or_port, baud: int):
    """A DeviceLink and whether this call opened it (and so must close it)."""
    if isinstance(link_or_port, DeviceLink):
        return link_or_port, False
    return protocol.open_link(str(link_or_port), baud), True


def _window(link, row, *, warmup, windows, per_window, timeout_s, attempts):
    features = np.frombuffer(row, dtype=np.int8)
    reply = _exchange(
        link,
        lambda seq: protocol.encode_window(
            seq, features, warmup=warmup, windows=windows, per_window=per_window
        ),
        protocol.WINDOW_REPLY,
        timeout_s=timeout_s,
        attempts=attempts,
        what=f"a latency window request ({windows} x {per_window})",
    )
    if isinstance(reply, ErrorReply):
        raise LinkError(
            f"the device on {link.port} refused the latency windows: {reply.name} "
            f"(detail {reply.detail})",
            hint="rebuild and flash the firmware with this mcu-ids version"
            if reply.code in _NOT_AVAILABLE_ERRORS
            else "check that the firmware was built for this model",
        )
    decoded = protocol.WindowReply.decode(reply.payload)
    if decoded.input_crc != protocol.crc16(row) or len(decoded.window_ticks) != windows:
        raise LinkError(
            f"the device on {link.port} answered the latency windows for another request",
            hint="check the cable, or lower the baud rate",
        )
    return decoded


def measure_latency(
    link_or_port,
    input_row: np.ndarray,
    *,
    warmup: int = DEFAULT_WARMUP,
    windows: int = DEFAULT_WINDOWS,
    per_window: int = DEFAULT_PER_WINDOW,
    baud: int = 115200,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
) -> LatencyWindows:
    """Latency windows (as MLPerf Tiny measures them) of one row on the device.

    The device runs ``warmup`` inferences, then ``windows`` windows of ``per_window`` inferences
    each with the marker pin raised, timing each window as a whole. A short window first measures
    how long an inference takes, and the request's timeout grows with the work it asks for.
    """
    _check_window_request(warmup, windows, per_window)
    link, opened = _open(link_or_port, baud)
    try:
        hello = link.hello(timeout_s, attempts=max(HELLO_ATTEMPTS, attempts))
        row = _row_bytes(input_row, hello)
        started = time.perf_counter()
        probe = _window(
            link,
            row,
            warmup=0,
            windows=1,
            per_window=CALIBRATION_INFERENCES,
            timeout_s=timeout_s,
            attempts=attempts,
        )
        wall = time.perf_counter() - started
        device = probe.window_ticks[0] / hello.tick_hz if hello.tick_hz else 0.0
        per_inference_s = max(wall, device) / CALIBRATION_INFERENCES
        work = warmup + windows * per_window
        window_timeout = timeout_s + WINDOW_TIMEOUT_FACTOR * work * per_inference_s
        log.info(
            "latency windows on %s: %d warm-up, %d x %d inferences (timeout %.3g s)",
            link.port,
            warmup,
            windows,
            per_window,
            window_timeout,
        )
        reply = _window(
            link,
            row,
            warmup=warmup,
            windows=windows,
            per_window=per_window,
            timeout_s=window_timeout,
            attempts=attempts,
        )
    finally:
        if opened:
            link.close()
    return LatencyWindows(
        warmup=warmup,
        per_window=per_window,
        window_ticks=list(reply.window_ticks),
        tick_hz=hello.tick_hz,
        tick_kind=hello.tick_kind,
        board=hello.board,
        engine=hello.engine,
        cpu_hz=hello.cpu_hz,
    )


def profile_layers(
    link_or_port,
    input_row: np.ndarray,
    *,
    ops: list[dict] | None = None,
    repeats: int = PROFILE_REPEATS,
    baud: int = 115200,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
) -> dict:
    """Ticks of each op of the engine on one row (the median of ``repeats`` profiled inferences).

    ``ops`` names the engine's ops in order (``native_engine_summary(...)["ops"]``: index, name,
    macs); with them each layer gets ticks and work (cycles, instructions or ns) per MAC.
    Firmware without per-layer timing (TFLite Micro, or built without it) gives
    ``{"available": False, "reason": ...}``.
    """
    from mcu_ids.hil.html_report import work_per_tick

    link, opened = _open(link_or_port, baud)
    try:
        hello = link.hello(timeout_s, attempts=max(HELLO_ATTEMPTS, attempts))
        row = _row_bytes(input_row, hello)
        replies = []
        for _ in range(max(1, repeats)):
            reply = _exchange(
                link,
                lambda seq: protocol.encode_frame(protocol.PROFILE, seq, row),
                protocol.PROFILE_REPLY,
                timeout_s=timeout_s,
                attempts=attempts,
                what="a per-layer profile request",
            )
            if isinstance(reply, ErrorReply):
                if reply.code in _NOT_AVAILABLE_ERRORS:
                    return _not_available(hello, reply)
                raise LinkError(
                    f"the device on {link.port} failed the per-layer profile: {reply.name} "
                    f"(detail {reply.detail})",
                    hint="check that the firmware was built for this model",
                )
            replies.append(protocol.ProfileReply.decode(reply.payload))
    finally:
        if opened:
            link.close()
    counts = {len(r.layer_ticks) for r in replies}
    if ops is not None and counts != {len(ops)}:
        raise LinkError(
            f"the device timed {sorted(counts)} ops, the model's engine has {len(ops)}",
            hint="rebuild and flash the firmware for this model",
        )
    factor, unit = work_per_tick(hello.tick_kind, hello.tick_hz, hello.board)
    return _layer_table(hello, replies, ops, factor, unit)


def _not_available(hello: Hello, reply: ErrorReply) -> dict:
    if hello.engine == "tflm":
        reason = "not available: the TFLite Micro engine keeps no per-layer ticks"
    else:
        reason = (
            f"not available: the {hello.engine} engine firmware was built without per-layer "
            f"timing ({reply.name})"
        )
    log.info("per-layer profile on %s: %s", hello.board, reason)
    return {"available": False, "reason": reason, "engine": hello.engine, "board": hello.board}


def _layer_table(hello, replies, ops, factor: float, unit: str) -> dict:
    ticks = np.array([r.layer_ticks for r in replies], dtype=np.float64)
    medians = np.median(ticks, axis=0)
    total = float(np.median([r.total_ticks for r in replies]))
    read_cost = float(np.median([r.tick_read_ticks for r in replies]))
    layers = []
    for position, median in enumerate(medians):
        op = ops[position] if ops else {"index": position, "name": "op", "macs": 0}
        macs = int(op.get("macs") or 0)
        # The shape of html_report.layer_costs: ticks, and the same in ``unit`` when it differs.
        row = {"index": int(op["index"]), "op": op["name"], "macs": macs}
        row["ticks_median"] = float(median)
        row["ticks_per_mac"] = float(median) / macs if macs else None
        if factor != 1.0:
            row[f"{unit}_median"] = float(median) * factor
            row[f"{unit}_per_mac"] = float(median) * factor / macs if macs else None
        row["share_pct"] = 100.0 * float(median) / total if total else None
        layers.append(row)
    return {
        "available": True,
        "board": hello.board,
        "engine": hello.engine,
        "repeats": len(replies),
        "tick_kind": hello.tick_kind,
        "tick_hz": hello.tick_hz,
        "work_unit": unit,
        "work_per_tick": factor,
        "total_ticks_median": total,
        "layer_ticks_sum": float(medians.sum()),
        # Each op adds one tick read and a store to what it times (the table's only overhead).
        "tick_read_ticks": read_cost,
        "profiling_overhead_ticks": read_cost * len(medians),
        "layers": layers,
    }


def representative_index(labels: np.ndarray) -> int:
    """The row to time in windows: the first row of the most frequent class."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise DataError("no rows to choose a latency row from", hint="select at least one row")
    classes, counts = np.unique(labels, return_counts=True)
    return int(np.flatnonzero(labels == classes[np.argmax(counts)])[0])


def _measured_or_reason(what: str, port: str, measure) -> dict:
    """What ``measure()`` returns, or why the device could not answer."""
    try:
        return measure()
    except LinkError as exc:
        log.warning("no %s from %s: %s", what, port, exc.message)
        return {"available": False, "reason": exc.message}


def measure_run_latency(
    run_dir: Path,
    port: str,
    input_row: np.ndarray,
    *,
    sample=None,
    ops: list[dict] | None = None,
    baud: int = 115200,
    warmup: int = DEFAULT_WARMUP,
    windows: int = DEFAULT_WINDOWS,
    per_window: int = DEFAULT_PER_WINDOW,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
) -> dict:
    """Latency windows and the per-layer profile of one row, stored with a finished run.

    Writes ``latency_windows.json`` and ``layers.json`` into ``run_dir``, adds them to the run's
    meta (``latency_windows``, ``layer_profile`` and, when available, ``layers``: one row per op in
    the shape of ``html_report.layer_costs``) and writes the reports again. A device that cannot
    answer gets the reason recorded instead; the run's results stand either way.
    """
    from mcu_ids.hil.report import REPORT_JSON, rewrite_bench_report

    run_dir = Path(run_dir)
    sample = sample.item() if isinstance(sample, np.generic) else sample
    _check_window_request(warmup, windows, per_window)
    try:
        with protocol.open_link(port, baud) as link:
            measured = _measured_or_reason(
                "latency windows",
                port,
                lambda: measure_latency(
                    link,
                    input_row,
                    warmup=warmup,
                    windows=windows,
                    per_window=per_window,
                    timeout_s=timeout_s,
                    attempts=attempts,
                ).to_dict(),
            )
            layers = _measured_or_reason(
                "per-layer profile",
                port,
                lambda: profile_layers(
                    link, input_row, ops=ops, timeout_s=timeout_s, attempts=attempts
                ),
            )
    except LinkError as exc:
        log.warning("no latency windows nor per-layer profile from %s: %s", port, exc.message)
        measured = {"available": False, "reason": exc.message}
        layers = dict(measured)
    measured.update(port=port, sample=sample)
    layers.update(port=port, sample=sample)
    write_json(run_dir / LATENCY_WINDOWS_FILE, measured)
    write_json(run_dir / LAYERS_FILE, layers)
    report_path = run_dir / REPORT_JSON
    report = json.loads(report_path.read_text(encoding="utf-8"))
    meta = report["meta"]
    meta["latency_windows"] = measured
    meta["layer_profile"] = {k: v for k, v in layers.items() if k != "layers"}
    meta.pop("layers", None)
    if layers.get("available"):
        meta["layers"] = layers["layers"]
    write_json(report_path, report)
    rewrite_bench_report(run_dir)
    return {"latency_windows": measured, "layers": layers}
