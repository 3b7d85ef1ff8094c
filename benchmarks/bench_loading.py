"""Loading speed and peak memory: plain pandas vs ``load_dataset`` (cold and cached).

Writes a synthetic 45-column dataset once (about 8.8 M rows by default, the size of the full
CICIoMT2024 CSV set) and measures, each in a fresh Python process:

- ``pandas``: ``pandas.read_csv`` of every file, then ``pandas.concat``;
- ``pyarrow``: ``load_dataset(use_cache=False)`` with the native parser turned off
  (``MCU_IDS_NATIVE_CSV=0``), so every file goes through the reader's general pyarrow path;
- ``uncached``: ``load_dataset(use_cache=False)`` (parses every CSV, writes no cache);
- ``cold``: ``load_dataset`` with an empty cache folder (parses every CSV and fills the cache);
- ``cached``: ``load_dataset`` again with that cache.

Peak memory is the process's high-water resident set (VmHWM); CPU time is user plus system time
of all threads, which shows the work done even when other processes share the CPUs. A cached load
maps the cached rows and reads them when they are first used, so for the ``load_dataset``
methods the table also gives "first pass": the time of one sum over every loaded value right
after the load (what the scaler's fit does first); it is not in the wall time, and the peak
memory includes it. Results go to
stdout as a table; "speedup" and "memory" are relative to pandas. With ``--rounds N`` every
method runs N times (round by round) and the table gives the median, with the range of times.

    python benchmarks/bench_loading.py [--rows 8800000] [--dir FOLDER] [--rounds 3]
"""

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_SIZE_ROWS = 8_800_000
N_CLASSES = 19
METHODS = ("pandas", "pyarrow", "uncached", "cold", "cached")
READ_CHUNK_BYTES = 1 << 24

log = logging.getLogger("bench_loading")


def peak_rss_bytes() -> int:
    """High-water resident set size of this process, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process (all threads), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(method: str, folder: Path, cache_dir: Path) -> dict:
    """Run one loading method in this process; return its time, row count and peak memory."""
    start = time.perf_counter()
    cpu_start = cpu_seconds()
    if method == "pandas":
        import pandas as pd

        from mcu_ids.data.reader import find_dataset_files

        frames = [pd.read_csv(path) for path, _, _ in find_dataset_files(folder)]
        table = pd.concat(frames, ignore_index=True)
        rows = len(table)
    else:
        from mcu_ids.data import fastcsv
        from mcu_ids.data.reader import load_dataset

        if method == "pyarrow":
            os.environ[fastcsv.NATIVE_ENV] = "0"
        use_cache = method not in ("uncached", "pyarrow")
        dataset = load_dataset(folder, progress=False, cache_dir=cache_dir, use_cache=use_cache)
        rows = len(dataset.y_train) + len(dataset.y_test)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    first_pass = None
    if method != "pandas":
        import numpy as np

        pass_start = time.perf_counter()
        for x in (dataset.x_train, dataset.x_test):
            np.add.reduce(x, axis=0, dtype=np.float64)
        first_pass = time.perf_counter() - pass_start
    return {
        "method": method,
        "seconds": seconds,
        "first_pass_seconds": first_pass,
        "cpu_seconds": cpu,
        "rows": rows,
        "peak_bytes": peak_rss_bytes(),
    }


def run_in_subprocess(method: str, folder: Path, cache_dir: Path) -> dict:
    """Measure one method in a fresh interpreter, so that peaks do not mix."""
    command = [
        sys.executable,
        __file__,
        "--measure",
        method,
        "--dir",
        str(folder),
        "--cache",
        str(cache_dir),
    ]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def ensure_dataset(folder: Path, rows: int) -> Path:
    """Write the synthetic dataset into ``folder`` unless a complete one of that size is there."""
    from mcu_ids.data.synthetic import write_synthetic_dataset

    stamp = folder / "BENCH_ROWS.txt"
    if stamp.is_file() and stamp.read_text().strip() == str(rows):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    log.info("writing a %d-row synthetic dataset to %s", rows, folder)
    start = time.perf_counter()
    write_synthetic_dataset(folder, rows_per_class=rows // N_CLASSES, variant="45")
    log.info("written in %.1f s", time.perf_counter() - start)
    stamp.write_text(f"{rows}\n")
    return folder


def warm_page_cache(folder: Path) -> None:
    """Read every CSV once so that no method pays for the first read from disk."""
    for path in sorted(folder.glob("*.csv")):
        with open(path, "rb") as handle:
            while handle.read(READ_CHUNK_BYTES):
                pass


def native_parser() -> str:
    """Which native CSV parser the load methods use (built now if needed), or why none."""
    from mcu_ids.data import fastcsv

    if not fastcsv.enabled():
        return f"off ({fastcsv.NATIVE_ENV})"
    library = fastcsv.load_library()
    if library is None:
        return "not available (no working C compiler): every method used pyarrow"
    return f"on, compiled with {' '.join(fastcsv.compiler_command())}"


def summarise(runs: list[dict]) -> dict:
    """One method's rounds as medians of time and CPU, the range of times and the highest peak."""
    seconds = sorted(r["seconds"] for r in runs)
    return {
        "method": runs[0]["method"],
        "seconds": statistics.median(seconds),
        "fastest": seconds[0],
        "slowest": seconds[-1],
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "first_pass_seconds": (
            None
            if runs[0]["first_pass_seconds"] is None
            else statistics.median(r["first_pass_seconds"] for r in runs)
        ),
        "rows": runs[0]["rows"],
        "peak_bytes": max(r["peak_bytes"] for r in runs),
    }


def print_table(results: list[dict], folder: Path, rounds: int) -> None:
    base = next(r for r in results if r["method"] == "pandas")
    size = sum(p.stat().st_size for p in folder.glob("*.csv"))
    print(f"dataset: {folder} ({size / 2**30:.2f} GiB of CSV, {base['rows']:,} rows)")
    print(f"load average when done: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"native parser: {native_parser()}")
    if rounds > 1:
        print(f"median of {rounds} rounds; range: fastest-slowest wall time")
    print(
        f"{'method':<9} {'wall s':>8} {'range s':>12} {'CPU s':>8} {'peak MiB':>9} "
        f"{'speedup':>8} {'memory':>8} {'first pass s':>13}"
    )
    for r in results:
        speedup = base["seconds"] / r["seconds"]
        memory = r["peak_bytes"] / base["peak_bytes"]
        spread = f"{r['fastest']:.2f}-{r['slowest']:.2f}"
        first_pass = r["first_pass_seconds"]
        first_pass = "-" if first_pass is None else f"{first_pass:.2f}"
        print(
            f"{r['method']:<9} {r['seconds']:>8.2f} {spread:>12} {r['cpu_seconds']:>8.2f} "
            f"{r['peak_bytes'] / 2**20:>9.0f} {speedup:>7.2f}x {memory:>7.2f}x {first_pass:>13}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_SIZE_ROWS, help="rows in the dataset")
    parser.add_argument("--dir", type=Path, help="dataset folder (written once)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every method this many times (medians)"
    )
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.dir, args.cache)))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from mcu_ids.data.reader import default_cache_dir

    folder = args.dir or default_cache_dir() / f"bench-dataset-{args.rows}"
    ensure_dataset(folder, args.rows)
    warm_page_cache(folder)
    native_parser()  # built before the timed runs, which must not include the compilation
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    # Rounds run every method in turn, so a passing burst of load touches all of them alike.
    for round_number in range(1, args.rounds + 1):
        cache_dir = Path(tempfile.mkdtemp(prefix="mcu-ids-bench-cache-"))
        try:
            for method in METHODS:
                log.info("round %d/%d: measuring %s", round_number, args.rounds, method)
                runs[method].append(run_in_subprocess(method, folder, cache_dir))
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print_table([summarise(runs[method]) for method in METHODS], folder, args.rounds)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))
    sys.exit(main())
