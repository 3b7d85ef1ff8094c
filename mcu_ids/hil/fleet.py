"""Benchmark several devices that run the same firmware at once, sharing the rows between them.

Every device must pass the handshake with the same model; the rows are dealt out in turn
(row i goes to device i mod N), each device is driven by its own thread over its own link, and all
answers go into one ``results.jsonl`` (each line names its ``port`` and ``boot_id``) and one
report. A device that stops answering ends only its own share; the rows it left are sent again by
``--resume``.
"""

import logging
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from mcu_ids.errors import LinkError, McuIdsError
from mcu_ids.fileio import write_json
from mcu_ids.hil.harness import (
    DEFAULT_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    FAILURES_FILE,
    HANDSHAKE_FILE,
    RUN_FILE,
    BenchResult,
    DeviceSession,
    ResultSink,
    check_shapes,
    connect_device,
    default_window,
    finish_run,
    outcome_record,
    pipeline_window,
    resume_state,
    run_plan,
)

log = logging.getLogger(__name__)

FLEET_FILE = "fleet.json"


def shard_rows(todo: Sequence[int], devices: int) -> list[list[int]]:
    """Deal ``todo`` out in turn: device k gets rows k, k + N, k + 2N, ... of it."""
    return [list(todo[k::devices]) for k in range(devices)]


def _check_ports(ports: Sequence[str]) -> list[str]:
    ports = [str(port) for port in ports]
    if not ports:
        raise McuIdsError("no serial port given", hint="give one --port per device")
    repeated = sorted({port for port in ports if ports.count(port) > 1})
    if repeated:
        raise McuIdsError(
            f"port {', '.join(repeated)} is given more than once",
            hint="give each device's port once",
        )
    return ports


def _merged_stats(sessions: list[DeviceSession]) -> dict:
    """Counters summed over the devices; the window is the largest any device used."""
    merged: dict = {}
    for session in sessions:
        for key, value in session.stats.items():
            if key in ("window", "max_outstanding"):
                merged[key] = max(merged.get(key, 0), value)
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


class _Shared:
    """What the device threads share: the result files, the progress bar and the counts."""

    def __init__(self, sink: ResultSink, bar, received: int) -> None:
        self.lock = threading.Lock()
        self.sink = sink
        self.bar = bar
        self.received = received
        self.failed = 0
        self.per_port: dict[str, int] = {}
        self.stop = threading.Event()
        self.errors: dict[str, BaseException] = {}


def run_fleet(
    ports: Sequence[str],
    inputs: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    *,
    expected_model_sha256: str,
    class_names: list[str],
    out_dir: Path,
    baud: int = 115200,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
    sample_ids: np.ndarray | None = None,
    expected_quantization: tuple[float, int, float, int] | None = None,
    meta: dict | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    reference_shift: np.ndarray | None = None,
    resume: bool = False,
    window: int | None = None,
) -> BenchResult:
    """``run_benchmark`` over several devices at once: each answers its share of the rows.

    Every device is refused before anything is sent if it runs another model. The report's
    handshake is the first device's; ``meta["fleet"]`` lists every device with the rows it
    answered and its link counters, and ``fleet.json`` holds every handshake.
    """
    ports = _check_ports(ports)
    inputs = np.asarray(inputs, dtype=np.int8)
    labels = np.asarray(labels)
    reference = np.asarray(reference, dtype=np.int8)
    check_shapes(inputs, labels, reference, sample_ids)
    sample_ids = np.arange(len(inputs)) if sample_ids is None else np.asarray(sample_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = run_plan(inputs, reference, sample_ids, expected_model_sha256)
    done = resume_state(out_dir, plan) if resume else set()
    from tqdm import tqdm

    with ExitStack() as stack:
        sessions = []
        for port in ports:
            link, hello = connect_device(
                port,
                baud=baud,
                timeout_s=timeout_s,
                attempts=attempts,
                expected_model_sha256=expected_model_sha256,
                shape=(inputs.shape[1], reference.shape[1]),
                expected_quantization=expected_quantization,
            )
            stack.enter_context(link)
            limit = default_window(hello) if window is None else window
            sessions.append(
                DeviceSession(
                    link, hello, timeout_s, attempts, pipeline_window(hello, inputs.shape[1], limit)
                )
            )
        first = sessions[0].hello
        write_json(out_dir / HANDSHAKE_FILE, first.to_dict())
        write_json(
            out_dir / FLEET_FILE,
            {"ports": ports, "handshakes": [s.hello.to_dict() for s in sessions]},
        )
        if not resume:
            write_json(out_dir / RUN_FILE, plan)
            (out_dir / FAILURES_FILE).unlink(missing_ok=True)
        run_meta = {
            **(meta or {}),
            "port": ports[0],
            "ports": ports,
            "baud": baud,
            "rows_requested": len(inputs),
            "expected_model_sha256": expected_model_sha256,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "resumed_rows": len(done),
        }
        todo = [index for index in range(len(inputs)) if index not in done]
        bar = tqdm(
            total=len(inputs), initial=len(done), unit="row", file=sys.stderr, disable=not progress
        )
        shared = _Shared(ResultSink(out_dir, append=resume), bar, len(done))
        rows = {
            "sample_ids": sample_ids,
            "labels": labels,
            "reference": reference,
            "reference_shift": reference_shift,
        }
        threads = [
            threading.Thread(
                target=_drive,
                args=(session, port, [(i, inputs[i]) for i in shard], rows, shared),
                name=f"bench {port}",
                daemon=True,
            )
            for session, port, shard in zip(
                sessions, ports, shard_rows(todo, len(ports)), strict=True
            )
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        except BaseException:
            shared.stop.set()
            for thread in threads:
                thread.join(timeout=timeout_s * attempts + 1.0)
            _close(shared)
            log.warning("fleet run stopped after %d of %d rows", shared.received, len(inputs))
            try:
                _finish(out_dir, sessions, ports, shared, class_names, run_meta, complete=False)
            except Exception as exc:  # the original failure matters more than the report's
                log.error("could not write the report of the stopped run: %s", exc)
            raise
        _close(shared)
    complete = shared.received == len(inputs)
    report = _finish(out_dir, sessions, ports, shared, class_names, run_meta, complete=complete)
    if shared.failed:
        log.warning(
            "%d of %d rows got no valid answer; see %s", shared.failed, len(inputs), FAILURES_FILE
        )
    if shared.errors:
        port, error = next(iter(shared.errors.items()))
        if isinstance(error, McuIdsError):
            raise error
        raise LinkError(f"the device on {port} failed: {error}") from error
    return BenchResult(
        out_dir, first.to_dict(), len(inputs), shared.received, report, _merged_stats(sessions)
    )


def _drive(session: DeviceSession, port: str, rows: list, data: dict, shared: _Shared) -> None:
    """One device's thread: send its share, file every outcome under the shared lock."""
    try:
        for outcome in session.run(rows):
            with shared.lock:
                if outcome.result is None:
                    shared.sink.failure(outcome.index, data["sample_ids"][outcome.index], outcome)
                    shared.failed += 1
                else:
                    record = outcome_record(
                        outcome, port=port, boot_id=session.hello.boot_id, **data
                    )
                    shared.sink.result(record)
                    shared.received += 1
                    shared.per_port[port] = shared.per_port.get(port, 0) + 1
                    shared.bar.update(1)
            if shared.stop.is_set():
                return
    except BaseException as exc:  # reported by the main thread once every device has stopped
        log.error("device on %s: %s", port, getattr(exc, "message", exc))
        with shared.lock:
            shared.errors[port] = exc


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.message if isinstance(error, McuIdsError) else str(error) or type(error).__name__


def _close(shared: _Shared) -> None:
    with shared.lock:
        shared.sink.close()
        shared.bar.close()


def _finish(out_dir, sessions, ports, shared: _Shared, class_names, run_meta, *, complete):
    fleet = [
        {
            "port": port,
            "board": session.hello.board,
            "boot_id": session.hello.boot_id,
            "rows_answered": shared.per_port.get(port, 0),
            "window": session.window,
            "link": dict(session.stats),
            "error": _error_text(shared.errors.get(port)),
        }
        for port, session in zip(ports, sessions, strict=True)
    ]
    return finish_run(
        out_dir,
        sessions[0].hello,
        _merged_stats(sessions),
        class_names,
        {**run_meta, "fleet": fleet},
        complete=complete,
    )
