"""Put benchmark runs (several boards, engines or models) side by side."""

import html
import json
from pathlib import Path

from mcu_ids.errors import McuIdsError
from mcu_ids.fileio import write_atomic
from mcu_ids.hil.energy import ESTIMATED, MEASURED

REPORT_FILE = "report.json"
# What every report written by `mcu-ids bench` holds, as objects; the columns read from them.
REPORT_SECTIONS = ("meta", "agreement")

# (column title, how to read it from a report, format)
_COLUMNS = (
    ("board", lambda r: r["meta"].get("board"), "{}"),
    ("engine", lambda r: r["meta"].get("engine"), "{}"),
    ("data", lambda r: "synthetic" if r["meta"].get("synthetic") else "real", "{}"),
    ("rows", lambda r: r["agreement"]["rows"], "{}"),
    ("identical %", lambda r: r["agreement"]["identical_outputs_pct"], "{:.2f}"),
    ("accuracy", lambda r: r["device_metrics"]["accuracy"], "{:.4f}"),
    ("macro F1", lambda r: r["device_metrics"]["macro_f1"], "{:.4f}"),
    ("weighted F1", lambda r: r["device_metrics"]["weighted_f1"], "{:.4f}"),
    ("latency median µs", lambda r: r["latency"]["device"]["us"]["median"], "{:.2f}"),
    ("latency p99 µs", lambda r: r["latency"]["device"]["us"]["p99"], "{:.2f}"),
    ("tick kind", lambda r: r["latency"]["device"].get("tick_kind"), "{}"),
    ("energy µJ", lambda r: _energy(r), "{}"),
    ("model", lambda r: r["meta"].get("model_sha256", "")[:12], "{}"),
    ("complete", lambda r: _completeness(r), "{}"),
    ("rows failed", lambda r: r["meta"].get("rows_failed"), "{}"),
)
STOPPED_EARLY = "(stopped early)"


class CompareError(McuIdsError):
    """A folder given to `report compare` is not a benchmark run."""


def _energy(report: dict) -> str:
    """The latest measured figure first, then the estimate; "-" when there is neither."""
    latest = {}
    for entry in report.get("energy") or []:
        if entry.get("uj_per_inference") is not None:
            latest[entry.get("kind")] = entry
    shown = [latest[kind] for kind in (MEASURED, ESTIMATED) if kind in latest]
    if not shown:
        return "-"
    return "; ".join(f"{entry['uj_per_inference']:.3g} ({entry['kind']})" for entry in shown)


def _completeness(report: dict) -> str | None:
    """Whether the run answered every row ("yes", or "no" with the count); None if unrecorded."""
    complete = report["meta"].get("complete")
    if complete is None:
        return None
    if complete:
        return "yes"
    requested = report["meta"].get("rows_requested", "?")
    return f"no: {report.get('rows', report['agreement']['rows'])} of {requested} rows"


def load_run(run_dir: Path) -> dict:
    """The report of one run folder, or a CompareError saying what the folder lacks."""
    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        raise CompareError(
            f"{run_dir} is not a benchmark run (no {REPORT_FILE})",
            hint="give folders from <workdir>/runs/ made by `mcu-ids bench`",
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    lacking = [
        key
        for key in REPORT_SECTIONS
        if not isinstance(report, dict) or not isinstance(report.get(key), dict)
    ]
    if lacking:
        raise CompareError(
            f"{run_dir} is not a benchmark run ({path} is not a run's report: no "
            f"{' or '.join(lacking)} section)",
            hint="give folders from <workdir>/runs/ made by `mcu-ids bench`",
        )
    return report


def comparison_rows(run_dirs: list[Path]) -> tuple[list[str], list[list[str]]]:
    """Column titles and one row of formatted cells per run."""
    titles = ["run", *(title for title, _, _ in _COLUMNS)]
    rows = []
    for run_dir in run_dirs:
        report = load_run(run_dir)
        cells = [Path(run_dir).name]
        if report.get("meta", {}).get("complete") is False:
            # Its figures cover only the rows answered before it stopped; say so where it is named.
            cells[0] += f" {STOPPED_EARLY}"
        for _, read, fmt in _COLUMNS:
            try:
                value = read(report)
            except (KeyError, TypeError):
                value = None
            cells.append("-" if value is None else fmt.format(value))
        rows.append(cells)
    return titles, rows


def compare_markdown(run_dirs: list[Path]) -> str:
    """The runs as a Markdown table."""
    titles, rows = comparison_rows(run_dirs)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_compare_html(run_dirs: list[Path], dest: Path) -> Path:
    """The runs as a self-contained HTML table."""
    titles, rows = comparison_rows(run_dirs)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mcu-ids runs compared</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>mcu-ids runs compared</h1><table><tr>{head}</tr>{body}</table></body></html>\n"
    )
    return write_atomic(Path(dest), page)
