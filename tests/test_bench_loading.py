"""The loading benchmark runs end to end on a small set and prints every method's figures."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_loading.py"
METHODS = ("pandas", "pyarrow", "uncached", "cold", "cached")


@pytest.mark.slow
def test_loading_benchmark_prints_a_row_per_method(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "1900", "--dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    table = {line.split()[0]: line.split() for line in done.stdout.splitlines()[4:]}
    assert tuple(table) == METHODS
    assert "1,900 rows" in done.stdout
    assert table["pandas"][-3:] == ["1.00x", "1.00x", "-"]
    for method in METHODS[1:]:
        wall, first_pass = float(table[method][1]), float(table[method][-1])
        assert wall > 0 and first_pass >= 0
