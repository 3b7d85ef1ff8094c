"""The ``mcu-ids`` command line: each subcommand calls one step of the pipeline."""

import logging
import sys
from pathlib import Path

import click

from mcu_ids import __version__
from mcu_ids.errors import McuIdsError
from mcu_ids.model.network import DEFAULT_FILTERS
from mcu_ids.workspace import DEFAULT_WORKDIR, Workspace

log = logging.getLogger("mcu_ids")

DEFAULT_BOARD = "qemu-f405"
# Above what any board this tool drives is powered with; only a typo gets there.
MAX_SUPPLY_V = 60.0


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(
        level=max(logging.DEBUG, min(level, logging.CRITICAL)),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # TensorFlow's Python logger is noisy at INFO; keep it at warnings unless -vv.
    logging.getLogger("tensorflow").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


class _Context:
    def __init__(self, workdir: Path, progress: bool):
        self.ws = Workspace(workdir)
        self.progress = progress


pass_ctx = click.make_pass_decorator(_Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_WORKDIR,
    envvar="MCU_IDS_WORKDIR",
    show_default=True,
    help="Folder where each step keeps its results.",
)
@click.option("-v", "--verbose", count=True, help="More messages (repeat for more).")
@click.option("-q", "--quiet", count=True, help="Fewer messages; no progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="mcu-ids")
@click.pass_context
def cli(ctx: click.Context, workdir: Path, verbose: int, quiet: int, debug: bool) -> None:
    """Train, quantize, deploy and benchmark an intrusion detector on microcontrollers."""
    _setup_logging(verbose, quiet)
    ctx.obj = _Context(workdir, progress=quiet == 0 and sys.stderr.isatty())


def _finite(param, value):
    """Reject nan, which passes every range comparison."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of volts", param=param)
    return value


def _echo(summary) -> None:
    from mcu_ids.pipeline import describe

    click.echo(summary if isinstance(summary, str) else describe(summary))


data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="CICIoMT2024 folder (*_train.pcap.csv / *_test.pcap.csv). Default: synthetic rows.",
)
view_option = click.option(
    "--view",
    type=click.Choice(["19", "6", "2"]),
    default="19",
    show_default=True,
    help="Labels: 19 classes, 6 categories, or benign/attack.",
)
seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed."
)
board_option = click.option(
    "--board", default=DEFAULT_BOARD, show_default=True, help="Board name (`mcu-ids boards`)."
)
engine_option = click.option(
    "--engine",
    type=click.Choice(["native", "tflm"]),
    default=None,
    help="Inference engine; default: the board's default.",
)
port_option = click.option("--port", default=None, help="Serial port of the board.")


@cli.command("data")
@data_option
@view_option
@click.option("--dedupe", is_flag=True, help="Drop exact duplicate rows (counted).")
@click.option(
    "--synthetic-rows",
    type=click.IntRange(min=10),
    default=400,
    show_default=True,
    help="Rows per class when generating synthetic data.",
)
@seed_option
@pass_ctx
def data_cmd(ctx, data_dir, view, dedupe, synthetic_rows, seed):
    """Read the dataset, split it, and fit the scaler on the training rows."""
    from mcu_ids.pipeline import prepare_data

    info = prepare_data(
        ctx.ws,
        data_dir,
        view=view,
        dedupe=dedupe,
        seed=seed,
        synthetic_rows=synthetic_rows,
        progress=ctx.progress,
    )
    _echo(_data_summary(info))


def _data_summary(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in ("feature_names",)}


@cli.command("train")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--gamma",
    type=click.FloatRange(min=0.0),
    default=2.0,
    show_default=True,
    help="Focal loss focusing parameter.",
)
@click.option(
    "--filters",
    default=",".join(map(str, DEFAULT_FILTERS)),
    show_default=True,
    help="Filters of each separable convolution block.",
)
@seed_option
@pass_ctx
def train_cmd(ctx, epochs, batch_size, gamma, filters, seed):
    """Train the separable 1D-CNN with focal loss and evaluate it."""
    from mcu_ids.model.train import TrainSettings
    from mcu_ids.pipeline import train

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, gamma=gamma, seed=seed)
    summary = train(ctx.ws, settings, _parse_filters(filters), progress=ctx.progress)
    click.echo((ctx.ws.model_dir / "metrics_float.md").read_text(encoding="utf-8"))
    log.info("best epoch %d, %.0f rows/s", summary["best_epoch"], summary["rows_per_second"])


def _parse_filters(text: str) -> tuple[int, ...]:
    try:
        filters = tuple(int(part) for part in text.split(","))
    except ValueError:
        filters = ()
    if not filters or any(f < 1 or f > 256 for f in filters):
        raise click.BadParameter(f"{text!r}: give 1-256 filters per block, e.g. 16,32")
    return filters


@cli.command("quantize")
@click.option("--calibration-rows", type=click.IntRange(min=10), default=1000, show_default=True)
@seed_option
@pass_ctx
def quantize_cmd(ctx, calibration_rows, seed):
    """Quantize to full int8 and compare float and int8 on the same test rows."""
    from mcu_ids.pipeline import format_quantization, quantize

    summary = quantize(ctx.ws, calibration_rows, seed=seed, progress=ctx.progress)
    click.echo(format_quantization(summary))


@cli.command("export")
@pass_ctx
def export_cmd(ctx):
    """Generate the model's C sources (C array, config header, native engine, TFLM resolver)."""
    from mcu_ids.pipeline import export

    manifest = export(ctx.ws, progress=ctx.progress)
    _echo({k: manifest[k] for k in ("model_sha256", "files")})


@cli.command("boards")
def boards_cmd():
    """List the boards mcu-ids knows."""
    from mcu_ids.build.boards import load_boards
    from mcu_ids.devices import check_board

    rows = [("board", "chip", "clock MHz", "flash KiB", "RAM KiB", "engines", "runs as")]
    for board in map(check_board, load_boards().values()):
        rows.append(
            (
                board.name,
                board.chip,
                # The host has no fixed clock: it times in nanoseconds.
                "-" if board.cycle_counter == "clock-monotonic" else f"{board.clock_hz / 1e6:g}",
                str(board.flash_kib),
                str(board.ram_kib),
                ",".join(board.engines),
                "emulated" if board.emulated else "hardware",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@cli.command("build")
@board_option
@engine_option
@click.option(
    "--tflm-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="MCU_IDS_TFLM_DIR",
    default=None,
    help="TFLite Micro source tree (from create_tflm_tree.py) for STM32 TFLM builds.",
)
@pass_ctx
def build_cmd(ctx, board, engine, tflm_dir):
    """Generate and build the firmware for a board."""
    from mcu_ids.devices import build_firmware

    _echo(build_firmware(ctx.ws, board, engine, tflm_dir))


@cli.command("flash")
@board_option
@port_option
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Emulated boards: start this many devices (a fleet for `bench`).",
)
@pass_ctx
def flash_cmd(ctx, board, port, count):
    """Put the built firmware on the board (emulated boards: start it) and print its port."""
    from mcu_ids.devices import flash_firmware

    result = flash_firmware(ctx.ws, board, port, count=count)
    _echo(result)


@cli.command("stop")
@board_option
@pass_ctx
def stop_cmd(ctx, board):
    """Stop an emulated board started by `mcu-ids flash`."""
    from mcu_ids.devices import stop_device

    _echo(stop_device(ctx.ws, board))


@cli.command("bench")
@board_option
@click.option(
    "--port",
    "ports",
    multiple=True,
    help="Serial port of the board; repeat it to share the rows over several devices.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Stream a stratified subset of this many rows (default: all test rows).",
)
@click.option("--baud", type=click.IntRange(min=300), default=None, help="Default: the board's.")
@data_option
@seed_option
@click.option(
    "--resume",
    "resume",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Continue the interrupted run in this folder (same model and rows).",
)
@click.option(
    "--warmup",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="Latency windows: inferences run before the first window.",
)
@click.option(
    "--windows",
    type=click.IntRange(1, 62),
    default=5,
    show_default=True,
    help="Latency windows: how many, each timed as a whole.",
)
@click.option(
    "--per-window",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Latency windows: inferences of one test row in each window.",
)
@click.option(
    "--energy-meter",
    "energy_meter",
    metavar="METER",
    default=None,
    help="Measure energy: ppk2[:PORT] or ina:PORT sample during the run (marker pin wired); "
    "trace:FILE.csv imports a trace recorded during it. See docs/energy.md.",
)
@click.option(
    "--supply-v",
    "supply_v",
    type=click.FloatRange(min=0, max=MAX_SUPPLY_V, min_open=True),
    callback=lambda ctx, param, value: _finite(param, value),
    default=None,
    help="Supply voltage in volts for the meter (default: the board's).",
)
@pass_ctx
def bench_cmd(
    ctx,
    board,
    ports,
    limit,
    baud,
    data_dir,
    seed,
    resume,
    energy_meter,
    supply_v,
    warmup,
    windows,
    per_window,
):
    """Stream test rows to the device and report accuracy, agreement, latency and energy."""
    from mcu_ids.devices import bench_device

    report = bench_device(
        ctx.ws,
        board,
        list(ports),
        limit=limit,
        baud=baud,
        data_dir=data_dir,
        seed=seed,
        progress=ctx.progress,
        resume=resume,
        warmup=warmup,
        windows=windows,
        per_window=per_window,
        energy_meter=energy_meter,
        supply_v=supply_v,
    )
    click.echo(report)


@cli.command("run")
@board_option
@engine_option
@data_option
@view_option
@click.option("--dedupe", is_flag=True, help="Drop exact duplicate rows (counted).")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Benchmark a stratified subset of this many test rows.",
)
@seed_option
@pass_ctx
def run_cmd(ctx, board, engine, data_dir, view, dedupe, epochs, limit, seed):
    """All steps: data, train, quantize, export, build, flash, bench."""
    from mcu_ids.devices import run_all

    click.echo(
        run_all(
            ctx.ws,
            board=board,
            engine=engine,
            data_dir=data_dir,
            view=view,
            dedupe=dedupe,
            epochs=epochs,
            limit=limit,
            seed=seed,
            progress=ctx.progress,
        )
    )


@cli.command("evaluate")
@click.option(
    "--protocol",
    type=click.Choice(["random", "files", "group", "all"]),
    default="all",
    show_default=True,
    help="How to split rows into training and test rows (see docs: evaluation protocols).",
)
@data_option
@view_option
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@seed_option
@pass_ctx
def evaluate_cmd(ctx, protocol, data_dir, view, epochs, seed):
    """Train and score the network under each evaluation protocol; print one table."""
    from mcu_ids.model.protocols import evaluate_protocols

    click.echo(
        evaluate_protocols(
            ctx.ws,
            data_dir,
            protocol,
            view=view,
            epochs=epochs,
            seed=seed,
            progress=ctx.progress,
        )
    )


@cli.group("report")
def report_group():
    """Work with benchmark reports."""


@report_group.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the table as HTML here.",
)
def report_compare_cmd(runs, html_path):
    """Put benchmark runs (boards, engines, models) side by side."""
    from mcu_ids.hil.compare import compare_markdown, write_compare_html

    click.echo(compare_markdown(list(runs)), nl=False)
    if html_path:
        write_compare_html(list(runs), html_path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning mcu-ids errors into one line and an exit code."""
    import os

    args = sys.argv[1:] if argv is None else argv
    # TensorFlow reads these when it is first imported. Its deterministic (non-oneDNN) kernels let
    # a seed reproduce a model. Its C++ start-up and tf.data messages, even at error level, are
    # not errors of this tool's work (e.g. an unknown graph attribute): only -v shows them.
    verbose = any(arg in ("-v", "--verbose", "--debug") or arg.startswith("-vv") for arg in args)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    for key in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel"):
        os.environ.setdefault(key, "2" if verbose else "3")
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="mcu-ids", standalone_mode=False)
    except McuIdsError as exc:
        if debug:
            raise
        click.echo(f"mcu-ids: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("mcu-ids: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("mcu-ids: interrupted; results written so far are kept", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
