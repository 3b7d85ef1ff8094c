"""Build, flash, benchmark and stop: the steps that depend on the board."""

import functools
import logging
import os
from pathlib import Path

import numpy as np

from mcu_ids.build.boards import Board, get_board
from mcu_ids.errors import BoardError, FlashError
from mcu_ids.fileio import write_json
from mcu_ids.model.network import DEFAULT_FILTERS
from mcu_ids.resources import asset_dir
from mcu_ids.workspace import Workspace

log = logging.getLogger(__name__)

HOST_BINARY = "mcu-ids-firmware"
# The Linux pty holds this much unread input for the host firmware (N_TTY's buffer).
HOST_PTY_BUFFER_BYTES = 4096
BUILD_INFO = "build.json"


def _engine_for(board: Board, engine: str | None) -> str:
    engine = engine or board.default_engine
    if engine not in board.engines:
        raise BoardError(
            f"board {board.name} does not support the {engine} engine",
            hint=f"use --engine {' or --engine '.join(board.engines)}",
        )
    return engine


def check_board(board: Board) -> Board:
    """Check the tables a board's toolchain and launcher read, as `build` and `flash` would."""
    if board.toolchain == "arm-none-eabi-gcc":
        from mcu_ids.build.stm32 import stm32_config

        stm32_config(board)
    elif board.toolchain == "esp-idf":
        from mcu_ids.build.espidf import esp32_settings

        esp32_settings(board)
    if board.flasher == "qemu":
        from mcu_ids.flash.qemu import qemu_settings

        qemu_settings(board)
    return board


# --- build -----------------------------------------------------------------------------------


def build_firmware(
    ws: Workspace, board_name: str, engine: str | None = None, tflm_dir: Path | None = None
) -> dict:
    """Render the board's firmware project from the exported model and build it where possible."""
    from mcu_ids.export.tflm import check_fits, memory_report
    from mcu_ids.pipeline import export_manifest

    board = check_board(get_board(board_name))
    engine = _engine_for(board, engine)
    manifest = export_manifest(ws)
    out = ws.build_dir(board.name)
    out.mkdir(parents=True, exist_ok=True)
    if board.toolchain == "gcc":
        info = _build_host(ws, board, engine)
    elif board.toolchain == "arm-none-eabi-gcc":
        info = _build_stm32(ws, board, engine, manifest["model_sha256"], tflm_dir)
    else:
        info = _build_espidf(ws, board, engine, manifest["model_sha256"])
    model_bytes = ws.tflite_model.stat().st_size
    if engine == "tflm":
        model_flash, arena = model_bytes, manifest["tflm_arena"]["arena_bytes"]
    else:
        model_flash = manifest["native_engine"]["weight_bytes"]
        arena = manifest["native_engine"]["scratch_bytes"]
    # A built image already holds the model and its arena; the report separates the two parts.
    report = memory_report(
        board,
        model_flash,
        arena,
        firmware_flash_bytes=max(info.get("flash_bytes", model_flash) - model_flash, 0),
        firmware_ram_bytes=max(info.get("ram_bytes", arena) - arena, 0),
    )
    info.update(
        board=board.name,
        engine=engine,
        model_sha256=manifest["model_sha256"],
        memory=report.as_dict(),
    )
    write_json(out / BUILD_INFO, info)
    log.info("%s", report.as_text())
    check_fits(report)
    return info


def _build_host(ws: Workspace, board: Board, engine: str) -> dict:
    from mcu_ids.build.host import build_host_firmware, host_firmware_sources

    defines = {"MCU_IDS_BOARD_NAME": board.name, "MCU_IDS_RX_BUFFER_BYTES": HOST_PTY_BUFFER_BYTES}
    # The per-op tick table costs one clock read per op; it serves `bench`'s per-layer profile.
    defines["MCU_IDS_PROFILE_LAYERS"] = None
    binary = build_host_firmware(
        [*host_firmware_sources(), ws.export_dir / "engine_native.c"],
        [ws.export_dir, asset_dir("firmware")],
        ws.build_dir(board.name) / HOST_BINARY,
        defines,
    )
    # The host has no flash budget worth checking; the model and arena are still reported.
    return {"artifact": str(binary)}


def _build_stm32(
    ws: Workspace, board: Board, engine: str, model_hash: str, tflm_dir: Path | None
) -> dict:
    from mcu_ids.build.stm32 import build_stm32_project, check_memory, render_stm32_project

    project = render_stm32_project(
        board,
        engine,
        ws.export_dir,
        ws.build_dir(board.name) / "project",
        model_hash,
        tflm_dir=tflm_dir,
    )
    result = build_stm32_project(project)
    check_memory(result, board.name)
    return {
        "project": str(project),
        "artifact": str(result.elf),
        "binary": str(result.bin),
        "flash_bytes": result.flash_bytes,
        "ram_bytes": result.ram_bytes,
    }


def _build_espidf(ws: Workspace, board: Board, engine: str, model_hash: str) -> dict:
    from mcu_ids.build.espidf import (
        build_espidf_project,
        build_instructions,
        esp32_settings,
        render_espidf_project,
    )

    project = render_espidf_project(
        board,
        engine,
        ws.export_dir,
        asset_dir("firmware"),
        ws.build_dir(board.name) / "project",
        model_hash,
    )
    result = build_espidf_project(project)
    if result is None:
        how = build_instructions(project, esp32_settings(board)["idf_target"])
        log.warning("idf.py is not on PATH: the project is rendered, not built.\n%s", how)
        return {"project": str(project), "built": False, "how_to_build": how}
    return {
        "project": str(project),
        "built": True,
        "artifact": str(result.app_bin),
        "flash_bytes": result.app_size_bytes,
    }


def read_build_info(ws: Workspace, board: Board) -> dict:
    """What `mcu-ids build` recorded for a board."""
    return ws.read_json(ws.build_dir(board.name) / BUILD_INFO, f"build --board {board.name}")


# --- flash -----------------------------------------------------------------------------------


def flash_firmware(ws: Workspace, board_name: str, port: str | None = None, count: int = 1) -> dict:
    """Put the built firmware on the board; emulated boards are started and their port returned.

    ``count`` starts that many emulated boards (a fleet for `bench`), each recorded in its own
    state file; real boards are flashed one at a time.
    """
    board = get_board(board_name)
    info = read_build_info(ws, board)
    if count < 1 or (count > 1 and not board.emulated):
        raise BoardError(
            f"--count {count} for board {board.name}: only emulated boards start several devices",
            hint="flash each real board with its own --port"
            if count > 1
            else "give a count of at least 1",
        )
    if board.emulated:
        _stop_recorded(ws, board)
        devices = [
            _start_emulated(board, Path(info["artifact"]), state)
            for state in device_state_files(ws, board, count)
        ]
        result = {"board": board.name, "port": devices[0].port, "pid": devices[0].pid}
        if count > 1:
            result.update(ports=[d.port for d in devices], pids=[d.pid for d in devices])
        return result
    if board.flasher == "pyocd":
        from mcu_ids.flash.pyocd_flasher import flash_stm32

        flash_stm32(Path(info["artifact"]), board)
        return {"board": board.name, "flashed": info["artifact"], "port": port}
    if port is None:
        raise FlashError(
            f"flashing {board.name} needs --port",
            hint="give the board's serial port, e.g. --port /dev/ttyUSB0",
        )
    if not info.get("built"):
        raise FlashError(
            f"the ESP-IDF project for {board.name} has not been built",
            hint=info.get("how_to_build", "build it with idf.py"),
        )
    from mcu_ids.flash.esptool_flasher import flash_esp32

    flash_esp32(board, Path(info["project"]), port)
    return {"board": board.name, "port": port, "flashed": info["project"]}


def device_state_files(ws: Workspace, board: Board, count: int | None = None) -> list[Path]:
    """State files of a board's emulated devices: ``<board>.json``, then ``<board>.2.json``, ...

    With ``count``, the first ``count`` names; without, those that exist now.
    """
    first = ws.device_state(board.name)
    if count is not None:
        return [first] + [first.with_name(f"{board.name}.{k}.json") for k in range(2, count + 1)]
    found = []
    for path in first.parent.glob(f"{board.name}.*.json"):
        number = path.name[len(board.name) + 1 : -len(".json")]
        if number.isdigit():
            found.append((int(number), path))
    return ([first] if first.exists() else []) + [path for _, path in sorted(found)]


def _start_emulated(board: Board, artifact: Path, state: Path):
    if board.flasher == "host-process":
        from mcu_ids.flash.host import start_host_device

        return start_host_device(artifact, state_file=state)
    from mcu_ids.flash.qemu import start_qemu

    return start_qemu(artifact, board, state_file=state)


def _stop_one(board: Board, state: Path) -> bool:
    if board.flasher == "host-process":
        from mcu_ids.flash.host import stop_host_device

        return bool(stop_host_device(state))
    from mcu_ids.flash.qemu import stop_qemu

    return bool(stop_qemu(state))


def _stop_recorded(ws: Workspace, board: Board) -> int:
    """Stop every device of ``board`` recorded in the workspace; returns how many were running."""
    stopped = 0
    for state in device_state_files(ws, board):
        stopped += _stop_one(board, state)
        state.unlink(missing_ok=True)
    return stopped


def stop_device(ws: Workspace, board_name: str) -> dict:
    """Stop the emulated board(s) started by `flash`."""
    board = get_board(board_name)
    if not board.emulated:
        return {"board": board.name, "stopped": False, "reason": "a real board keeps running"}
    if not device_state_files(ws, board):
        return {"board": board.name, "stopped": False, "reason": "no running device recorded"}
    stopped = _stop_recorded(ws, board)
    return {"board": board.name, "stopped": stopped > 0, "devices": stopped}


def device_port(ws: Workspace, board: Board, port: str | None) -> str:
    """The port to talk to: the one given, or the one an emulated board was started on."""
    return device_ports(ws, board, [port] if port else [])[0]


def device_ports(ws: Workspace, board: Board, ports) -> list[str]:
    """The ports to benchmark: those given, or every running emulated device of the board."""
    if isinstance(ports, str):
        ports = [ports]
    if ports:
        return list(ports)
    if board.emulated:
        found = [_running_port(board, state) for state in device_state_files(ws, board)]
        found = [port for port in found if port]
        if found:
            return found
    hint = (
        f"run `mcu-ids flash --board {board.name}` first"
        if board.emulated
        else "give the board's serial port with --port"
    )
    raise FlashError(f"no serial port for board {board.name}", hint=hint)


def _running_port(board: Board, state: Path) -> str | None:
    """The port of the emulated board recorded in ``state`` if it still runs."""
    if board.flasher == "qemu":
        from mcu_ids.flash.qemu import load_state

        device = load_state(state)
        return device.port if device.is_running() and os.path.exists(device.port) else None
    from mcu_ids.flash.host import find_running_device

    return find_running_device(state)


# --- bench -----------------------------------------------------------------------------------


def bench_device(
    ws: Workspace,
    board_name: str,
    port: str | list[str] | tuple[str, ...] | None,
    *,
    limit: int | None = None,
    baud: int | None = None,
    data_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: Path | None = None,
    warmup: int | None = None,
    windows: int | None = None,
    per_window: int | None = None,
    energy_meter: str | None = None,
    supply_v: float | None = None,
) -> str:
    """Benchmark the flashed device; returns the Markdown report.

    With ``resume``, continue the interrupted run in that folder on the rows it chose.
    Several ports (or several emulated devices started by `flash --count`) share the rows: a
    fleet run with one report. After the rows, the first device runs latency windows
    (``warmup``, then ``windows`` x ``per_window`` inferences of one test row) and a per-layer
    profile of that row; both go into the run folder and the report (None: the harness's
    defaults).
    ``energy_meter`` (``ppk2[:PORT]``, ``ina:PORT`` or ``trace:FILE.csv``) adds a MEASURED
    energy figure: a live meter samples while the rows stream, a trace is imported after the
    run. ``supply_v`` defaults to the board's (none for emulated boards).
    """
    from mcu_ids.hil.harness import read_run_plan, run_benchmark, select_samples
    from mcu_ids.hil.latency import measure_run_latency, representative_index
    from mcu_ids.model.shift import format_shift_report, write_shift_report
    from mcu_ids.pipeline import bench_inputs, bench_meta, new_run_dir

    board = get_board(board_name)
    energy = _energy_recording(board, energy_meter, supply_v) if energy_meter else None
    info = ws.read_json(ws.dataset_info, "data")
    quant = ws.read_json(ws.quantization_info, "quantize")
    ports = device_ports(ws, board, port)
    build = read_build_info(ws, board)
    source = bench_inputs(ws, data_dir, progress=progress)
    if resume is not None:
        run_dir = Path(resume)
        picked = resumed_selection(read_run_plan(run_dir), len(source["labels"]), run_dir)
    else:
        picked = select_samples(source["labels"], limit, seed)
        run_dir = new_run_dir(ws, board.name)
    meta = bench_meta(ws, board, build["engine"], source)
    meta["rows_available"] = int(len(source["labels"]))
    meta["rows_selected"] = int(len(picked))
    if source.get("in_train") is not None:
        meta["test_rows_also_in_train"] = int(source["in_train"][picked].sum())
    meta["memory"] = build.get("memory")
    log.info(
        "benchmarking %d rows on %s at %s; results go to %s",
        len(picked),
        board.name,
        ", ".join(ports),
        run_dir,
    )
    metering = False
    try:
        if energy is not None:
            energy.start()
            metering = True
        if len(ports) > 1:
            from mcu_ids.hil.fleet import run_fleet

            stream = functools.partial(run_fleet, ports)
        else:
            stream = functools.partial(run_benchmark, ports[0])
        result = stream(
            source["inputs"][picked],
            source["labels"][picked],
            source["reference"][picked],
            expected_model_sha256=quant["model_sha256"],
            class_names=info["class_names"],
            out_dir=run_dir,
            baud=baud or board.baud,
            progress=progress,
            sample_ids=np.asarray(picked),
            expected_quantization=(
                quant["input"]["scale"],
                quant["input"]["zero_point"],
                quant["output"]["scale"],
                quant["output"]["zero_point"],
            ),
            meta=meta,
            reference_shift=source["shift_scores"][picked],
            resume=resume is not None,
        )
    except BaseException as error:
        if metering:
            energy.abandon()
        # A run that got no result leaves no empty folder behind (`report compare` reads them).
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        elif isinstance(error, KeyboardInterrupt) and run_dir.is_dir():
            log.warning(
                "the rows answered so far are kept in %s; to finish the run: mcu-ids --workdir %s "
                "bench --board %s --resume %s%s",
                run_dir,
                ws.root,
                board.name,
                run_dir,
                f" --data {data_dir}" if data_dir is not None else "",
            )
        raise
    if energy is not None:
        from mcu_ids.hil.energy import add_energy_to_run

        energy.stop()
        add_energy_to_run(result.out_dir, energy.result(result.rows_received))
    row = representative_index(source["labels"][picked])
    window_settings = {"warmup": warmup, "windows": windows, "per_window": per_window}
    measure_run_latency(
        result.out_dir,
        ports[0],
        source["inputs"][picked[row]],
        sample=picked[row],
        ops=_engine_ops(ws, build["engine"]),
        baud=baud or board.baud,
        **{name: value for name, value in window_settings.items() if value is not None},
    )
    report = (result.out_dir / "report.md").read_text(encoding="utf-8")
    shift = write_shift_report(result.out_dir, info["class_names"], quant["shift"]["threshold"])
    if data_dir is None:
        from mcu_ids.model.explain import explain_run
        from mcu_ids.workspace import DamagedArtefactError

        try:
            explain_run(ws, result.out_dir)
        except DamagedArtefactError as error:
            # The device's results are complete and saved; only the explanations are missing.
            log.warning("no explanations for this run: %s (%s)", error.message, error.hint)
    else:
        log.info("no explanations: rows of --data are not the prepared test rows")
    return report + "\n" + format_shift_report(shift)


def _energy_recording(board: Board, meter: str, supply_v: float | None):
    """The run's energy recording, checked before any row is sent."""
    from mcu_ids.hil.energy import RunEnergy, parse_meter_choice

    if supply_v is None and not board.emulated:
        supply_v = board.supply_v
    return RunEnergy(parse_meter_choice(meter), supply_v)


def _engine_ops(ws: Workspace, engine: str) -> list[dict] | None:
    """The native engine's ops in order (name, MACs), which the device's per-op ticks follow."""
    if engine != "native":
        return None
    from mcu_ids.export.native import native_engine_summary

    return native_engine_summary(ws.tflite_model.read_bytes())["ops"]


def resumed_selection(plan: dict, rows_available: int, run_dir: Path) -> np.ndarray:
    """The rows an interrupted run chose, checked against the data available now."""
    picked = np.asarray(plan["sample_ids"], dtype=np.int64)
    if picked.size and (picked.min() < 0 or picked.max() >= rows_available):
        raise BoardError(
            f"the run in {run_dir} used rows up to {picked.max()}, the data has {rows_available}",
            hint="resume with the same data (--data) the run started with",
        )
    return picked


# --- everything ------------------------------------------------------------------------------


def run_all(
    ws: Workspace,
    *,
    board: str,
    engine: str | None,
    data_dir: Path | None,
    view: str,
    dedupe: bool,
    epochs: int,
    limit: int | None,
    seed: int,
    progress: bool,
) -> str:
    """Every step in order; an emulated board is started for the benchmark and stopped after it."""
    from mcu_ids.model.train import TrainSettings
    from mcu_ids.pipeline import export, prepare_data, quantize, train

    board_obj = get_board(board)
    _engine_for(board_obj, engine)
    if not board_obj.emulated:
        raise BoardError(
            f"`mcu-ids run` drives emulated boards; {board} is real hardware",
            hint="run the steps one by one: build, then flash and bench with --port",
        )
    prepare_data(ws, data_dir, view=view, dedupe=dedupe, seed=seed, progress=progress)
    train(ws, TrainSettings(epochs=epochs, seed=seed), DEFAULT_FILTERS, progress=progress)
    quantize(ws, calibration_rows=1000, seed=seed, progress=progress)
    export(ws, progress=progress)
    build_firmware(ws, board, engine)
    flash_firmware(ws, board)
    try:
        return bench_device(ws, board, None, limit=limit, seed=seed, progress=progress)
    finally:
        stop_device(ws, board)
