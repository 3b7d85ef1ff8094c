"""The native CSV parser: bit-identical to the pyarrow reader, and it hands over what it rejects."""

import decimal
import logging
import os
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.data import fastcsv, reader
from mcu_ids.data.reader import (
    NULL_TOKENS,
    load_dataset,
    read_feature_file,
    read_header,
)
from mcu_ids.data.schema import COLUMNS_39, COLUMNS_45
from mcu_ids.data.synthetic import write_synthetic_dataset
from mcu_ids.errors import DataError

HEADER_39 = ",".join(COLUMNS_39)


@pytest.fixture(scope="module", autouse=True)
def native_parser():
    if fastcsv.load_library() is None:
        pytest.skip("no C compiler: the native parser cannot be built here")


def general_reader(path: Path, variant: str, monkeypatch) -> tuple[np.ndarray, dict]:
    """The pyarrow reader's result for a file (the reference)."""
    with monkeypatch.context() as patch:
        patch.setenv(fastcsv.NATIVE_ENV, "0")
        return read_feature_file(path, variant)


def native_rows(path: Path, columns=COLUMNS_39):
    """The native parser's raw result; fails the test if it handed the file over."""
    parsed = fastcsv.read_rows(path, read_header(path), columns, _empty)
    assert parsed is not None, f"the native parser rejected {path.name}"
    return parsed


def _empty(shape):
    return np.empty(shape, dtype=np.float32)


def assert_same_as_general(path: Path, variant: str, monkeypatch) -> np.ndarray:
    native_rows(path, COLUMNS_39 if variant == "39" else COLUMNS_45)
    x, stats = read_feature_file(path, variant)
    expected, expected_stats = general_reader(path, variant, monkeypatch)
    assert x.shape == expected.shape
    np.testing.assert_array_equal(x.view(np.uint32), expected.view(np.uint32))
    assert stats == expected_stats
    return x


def write_values(path: Path, values: list[str], header: str = HEADER_39) -> Path:
    """Write values row by row under a 39-column header, padding the last row with zeros."""
    width = header.count(",") + 1
    values = values + ["0"] * (-len(values) % width)
    rows = [",".join(values[i : i + width]) for i in range(0, len(values), width)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def random_numbers(rng: np.random.Generator, n: int) -> list[str]:
    """Numbers written the many ways a CSV writer may write them, over float32's whole range."""
    magnitudes = 10.0 ** rng.uniform(-44, 38.6, n) * rng.choice([-1.0, 1.0], n)
    values = []
    for i, v in enumerate(magnitudes):
        style = i % 9
        if style == 0:
            values.append(repr(float(v)))
        elif style == 1:
            values.append(f"{v:.17g}")
        elif style == 2:
            values.append(f"{v:.9e}")
        elif style == 3:
            values.append(f"{v:.22g}")
        elif style == 4:
            values.append(str(np.float32(np.clip(v, -3e38, 3e38))))
        elif style == 5:
            values.append(f"{v:.6E}")
        elif style == 6:
            values.append(str(int(rng.integers(-(10**18), 10**18))))
        elif style == 7:
            values.append(f"{rng.uniform(-1e4, 1e4):.{int(rng.integers(0, 25))}f}")
        else:
            values.append(repr(float(rng.uniform(0, 1e-3))))
    return values


def float32_midpoints(rng: np.random.Generator, n: int) -> list[str]:
    """Values at, and a hair beside, the midpoint between two neighbouring float32s.

    Rounding through double lands exactly on such a midpoint for decimals a little off it, the
    case where a cast after a double conversion would round the wrong way.
    """
    low = (rng.uniform(-30, 30, n)).astype(np.float64)
    low = np.float32(10.0) ** low.astype(np.float32)
    high = np.nextafter(low, np.float32(np.inf))
    values = []
    for a, b in zip(low.astype(np.float64), high.astype(np.float64), strict=True):
        mid = float((a + b) / 2)  # exact in double: 25 significant bits
        values += [repr(mid), f"{mid:.16g}", f"{mid:.18g}", f"{mid:.19g}", f"{mid:.20g}"]
        values.append(format(decimal.Decimal(mid), "f"))  # the midpoint itself, exactly
    return values


EDGE_VALUES = [
    "0", "-0", "0.0", "-0.0", "+5", ".5", "5.", "-.5", "+.25e1", "1e5", "1E+05", "1e-05",
    "0001.2500", "00000000000000000000000000012", "0.000000000000000000000000000000001",
    "inf", "-inf", "+inf", "Inf", "INF", "infinity", "-Infinity",
    "16777216", "16777217", "16777218", "16777219", "33554434", "33554435", "9007199254740993",
    "18446744073709551615", "18446744073709551616", "123456789012345678901234567890",
    "1.00000000000000000000000000001", "0.99999999999999999999999999",
    "3.4028234e38", "3.4028235e38", "3.40282356e38", "3.4028235677973366e38",
    "3.4028235677973367e38", "3.5e38", "1e39", "-1e39", "1e400", "1e-400",
    "1.1754943e-38", "1.1754942e-38", "1e-40", "1.401298464324817e-45", "7.006492321624085e-46",
    "7.006492321624086e-46", "1e-46", "1e0000000000000000005", "7e22", "7e-22", "4.4e23",
    "1e23", "8388608.5", "8388609.5", "0.1", "0.2", "0.3", "1.5e-10", "2.5e10",
    "7449.918294849023", "0.0001342296600341797", "8.744663662380642e-05",
]  # fmt: skip


def test_real_sample_is_identical(sample_dir, monkeypatch):
    for path in sorted(sample_dir.glob("*.csv")):
        x = assert_same_as_general(path, "39", monkeypatch)
        assert len(x) > 1000


@pytest.mark.parametrize("variant", ["39", "45"])
def test_synthetic_files_of_both_variants_are_identical(tmp_path, monkeypatch, variant):
    folder = write_synthetic_dataset(tmp_path, rows_per_class=300, variant=variant, seed=3)
    for path in sorted(folder.glob("*.csv")):
        assert_same_as_general(path, variant, monkeypatch)


def test_edge_values_are_identical(tmp_path, monkeypatch):
    path = write_values(tmp_path / "Benign_train.pcap.csv", EDGE_VALUES)
    x = assert_same_as_general(path, "39", monkeypatch)
    assert x[0, 1].view(np.uint32) == np.float32(-0.0).view(np.uint32)


def test_random_values_agree_with_pyarrow(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    path = write_values(tmp_path / "Benign_train.pcap.csv", random_numbers(rng, 60_000))
    assert_same_as_general(path, "39", monkeypatch)


def test_values_beside_float32_midpoints_agree_with_pyarrow(tmp_path, monkeypatch):
    rng = np.random.default_rng(11)
    values = float32_midpoints(rng, 5_000)
    path = write_values(tmp_path / "Benign_train.pcap.csv", values)
    x = assert_same_as_general(path, "39", monkeypatch)
    # The values hold traps: rounding to double and then to float32 gets some of them wrong.
    through_double = np.array([float(v) for v in values], dtype=np.float64).astype(np.float32)
    assert np.count_nonzero(through_double != x.ravel()[: len(values)]) > 100


def test_nan_tokens_drop_the_same_rows_and_inf_is_counted(tmp_path, monkeypatch):
    values = ["1.5"] * (len(COLUMNS_39) * (len(NULL_TOKENS) + 4))
    for row, token in enumerate([*NULL_TOKENS, "NAN", "+nan"]):
        values[row * len(COLUMNS_39) + row % len(COLUMNS_39)] = token
    values[-1] = "-inf"
    values[-2] = "inf"
    path = write_values(tmp_path / "Benign_train.pcap.csv", values)
    x, nan_rows, positive, negative = native_rows(path)
    assert nan_rows.tolist() == [True] * (len(NULL_TOKENS) + 2) + [False] * 2
    assert positive.sum() == 1 and negative[-1] == 1
    x = assert_same_as_general(path, "39", monkeypatch)
    assert len(x) == 2


def test_line_ends_blank_lines_and_a_missing_last_line_end(tmp_path, monkeypatch):
    row = ",".join(str(i * 1.25) for i in range(len(COLUMNS_39)))
    texts = {
        "crlf": HEADER_39 + "\r\n" + (row + "\r\n") * 3,
        "blank": HEADER_39 + "\n\n" + row + "\n\n\r\n" + row + "\n",
        "no_end": HEADER_39 + "\n" + row + "\n" + row,
        "cr_at_end": HEADER_39 + "\n" + row + "\n" + row + "\r",
    }
    for name, text in texts.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text, newline="")
        assert_same_as_general(path, "39", monkeypatch)


def test_header_only_file_and_a_header_without_line_end(tmp_path, monkeypatch):
    path = tmp_path / "header.csv"
    path.write_text(HEADER_39 + "\n")
    x, nan_rows, _, _ = native_rows(path)
    assert x.shape == (0, len(COLUMNS_39)) and len(nan_rows) == 0
    assert_same_as_general(path, "39", monkeypatch)
    path.write_text(HEADER_39)
    assert fastcsv.read_rows(path, read_header(path), COLUMNS_39, _empty) is None


def test_columns_in_another_order_and_an_extra_column_are_mapped(tmp_path, monkeypatch):
    order = list(reversed(COLUMNS_39))
    header = ",".join(order[:5] + ["comment"] + order[5:])
    values = []
    for r in range(20):
        row = [f"{c + r / 8}" for c in range(len(order))]
        values += row[:5] + ["not a number"] + row[5:]
    path = write_values(tmp_path / "Benign_train.pcap.csv", values, header)
    x, _, _, _ = native_rows(path)
    assert x[3, COLUMNS_39.index(order[0])] == 0 + 3 / 8
    assert x[3, COLUMNS_39.index(order[-1])] == len(order) - 1 + 3 / 8


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda lines: lines.__setitem__(40, lines[40].replace("2.5", "abc", 1)), "line 41"),
        (lambda lines: lines.__setitem__(70, lines[70] + ",7"), "line 71"),
        (lambda lines: lines.__setitem__(70, lines[70].rsplit(",", 1)[0]), "line 71"),
        (lambda lines: lines.__setitem__(55, lines[55].replace(",", " ,", 1)), "line 56"),
        (lambda lines: lines.__setitem__(55, '"' + lines[55] + '"'), "line 56"),
    ],
    ids=["text", "extra field", "missing field", "space", "quotes"],
)
def test_rejected_files_get_the_general_readers_error(
    tmp_path, monkeypatch, caplog, mangle, message
):
    lines = [HEADER_39] + [",".join(["2.5"] * len(COLUMNS_39))] * 100
    mangle(lines)
    path = tmp_path / "Benign_train.pcap.csv"
    path.write_text("\n".join(lines) + "\n")
    # Several chunks, so the line number is counted across them.
    monkeypatch.setattr(fastcsv, "MIN_CHUNK_BYTES", 1)
    monkeypatch.setattr(fastcsv, "_thread_count", lambda: 4)
    with caplog.at_level(logging.DEBUG, logger=fastcsv.__name__):
        assert fastcsv.read_rows(path, read_header(path), COLUMNS_39, _empty) is None
    assert f"{message}," in caplog.text
    try:
        general_reader(path, "39", monkeypatch)
    except DataError as error:
        expected = error.message
    else:
        expected = None  # the general reader accepts a space before a comma
    if expected is None:
        x, stats = read_feature_file(path, "39")
        assert stats == general_reader(path, "39", monkeypatch)[1] and len(x) == 100
    else:
        with pytest.raises(DataError) as error:
            read_feature_file(path, "39")
        assert error.value.message == expected and message in expected


def test_repeated_header_row_is_read_by_the_general_reader(tmp_path, monkeypatch):
    row = ",".join(["3"] * len(COLUMNS_39))
    path = tmp_path / "Benign_train.pcap.csv"
    path.write_text("\n".join([HEADER_39, row, row, HEADER_39, row]) + "\n")
    assert fastcsv.read_rows(path, read_header(path), COLUMNS_39, _empty) is None
    x, stats = read_feature_file(path, "39")
    assert len(x) == 3 and stats["header_rows_skipped"] == 1


def test_lone_carriage_returns_are_left_to_the_general_reader(tmp_path, monkeypatch):
    row = ",".join(["3"] * len(COLUMNS_39))
    for text in (HEADER_39 + "\r" + row + "\r" + row, HEADER_39 + "\n" + row + "\r" + row + "\n"):
        path = tmp_path / "Benign_train.pcap.csv"
        path.write_text(text, newline="")
        assert fastcsv.read_rows(path, read_header(path), COLUMNS_39, _empty) is None


@pytest.mark.parametrize("chunks", [1, 2, 3, 8, 64])
def test_any_number_of_chunks_gives_the_same_rows(tmp_path, monkeypatch, chunks):
    rng = np.random.default_rng(chunks)
    path = write_values(tmp_path / "Benign_train.pcap.csv", random_numbers(rng, 39 * 50))
    monkeypatch.setattr(fastcsv, "MIN_CHUNK_BYTES", 1)
    monkeypatch.setattr(fastcsv, "_thread_count", lambda: chunks)
    assert_same_as_general(path, "39", monkeypatch)


def test_cached_load_equals_the_general_reader_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=60, seed=5)
    # One file the native parser hands over after it has allocated the cache array.
    repeated = folder / "Benign_train.pcap.csv"
    text = repeated.read_text().splitlines()
    repeated.write_text("\n".join(text[:10] + text[:1] + text[10:]) + "\n")
    cache = tmp_path / "cache"
    native = load_dataset(folder, progress=False, cache_dir=cache)
    with monkeypatch.context() as patch:
        patch.setenv(fastcsv.NATIVE_ENV, "0")
        general = load_dataset(folder, progress=False, use_cache=False)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(native, name), getattr(general, name))
    assert native.stats["header_rows_skipped"] == 1
    assert native.stats["rows"] == general.stats["rows"]
    assert sorted({p.suffix for p in cache.iterdir()}) == [".f32", ".json"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_without_a_compiler_the_general_reader_is_used(tmp_path, monkeypatch, caplog):
    path = write_values(tmp_path / "Benign_train.pcap.csv", ["1.25"] * 390)
    monkeypatch.setattr(fastcsv, "compiler_command", lambda: None)
    fastcsv.load_library.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger=fastcsv.__name__):
            assert fastcsv.read_rows(path, read_header(path), COLUMNS_39, _empty) is None
            x, _ = read_feature_file(path, "39")
        assert "no C compiler" in caplog.text
        assert x.shape == (10, len(COLUMNS_39)) and np.all(x == 1.25)
    finally:
        fastcsv.load_library.cache_clear()


def test_a_failing_compiler_is_logged_and_the_general_reader_used(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MCU_IDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")
    fastcsv.load_library.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger=fastcsv.__name__):
            assert fastcsv.load_library() is None
        assert "cannot build the native CSV parser" in caplog.text
        assert not list((tmp_path / "cache" / "native").glob("*.so"))
    finally:
        fastcsv.load_library.cache_clear()


def test_a_damaged_library_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MCU_IDS_CACHE", str(tmp_path / "cache"))
    fastcsv.load_library.cache_clear()
    try:
        built = fastcsv.build_library(tmp_path / "cache", fastcsv.compiler_command())
        built.write_bytes(built.read_bytes()[:100])  # cut short, as a full disk leaves it
        assert fastcsv.load_library() is not None
        assert built.stat().st_size > 100
    finally:
        fastcsv.load_library.cache_clear()


def test_the_library_is_keyed_by_source_and_compiler(tmp_path):
    compiler = fastcsv.compiler_command()
    built = fastcsv.build_library(tmp_path, compiler)
    assert built.is_file() and built.parent == tmp_path / "native"
    assert fastcsv.build_library(tmp_path, compiler) == built
    assert fastcsv.library_path(tmp_path, [*compiler, "-w"]) != built


@pytest.mark.parametrize("fail_at", [0, 3])
def test_a_cache_that_runs_out_of_space_costs_a_warning_not_the_load(
    tmp_path, monkeypatch, caplog, fail_at
):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=40, seed=2)
    repeated = folder / "Benign_train.pcap.csv"
    text = repeated.read_text().splitlines()
    repeated.write_text("\n".join(text[:5] + text[:1] + text[5:]) + "\n")
    expected = load_dataset(folder, progress=False, use_cache=False)
    reserved = []

    def full_disk(fd, offset, length):
        reserved.append(length)
        if len(reserved) > fail_at:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(reader.os, "posix_fallocate", full_disk)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger=reader.__name__):
        dataset = load_dataset(folder, progress=False, cache_dir=cache)
    assert caplog.text.count("could not cache the dataset") == 1
    # Given up at the first failure; the rows the cache files held so far moved to memory.
    assert len(reserved) == fail_at + 1
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(dataset, name), getattr(expected, name))
    assert dataset.stats["header_rows_skipped"] == 1
    assert not cache.exists() or not list(cache.iterdir())


def test_without_address_space_for_the_bound_the_lines_are_counted(tmp_path, monkeypatch):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=30, seed=6)
    expected = load_dataset(folder, progress=False, use_cache=False)
    files = list(folder.glob("*.csv"))
    lines = sum(p.read_bytes().count(b"\n") + 1 for p in files)
    limit = lines * len(expected.feature_names) * 4  # what counting the lines needs, at most
    mapped = []
    real_mmap = reader.mmap.mmap

    def strict(fd, size, **options):
        if fd == -1:
            mapped.append(size)
            if size > limit:
                raise OSError(12, "Cannot allocate memory")
        return real_mmap(fd, size, **options)

    monkeypatch.setattr(reader.mmap, "mmap", strict)
    dataset = load_dataset(folder, progress=False, use_cache=False)
    assert max(mapped) > limit >= mapped[-1]  # refused the first time, mapped after counting
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(dataset, name), getattr(expected, name))


def test_files_left_by_a_killed_load_are_removed_by_the_next(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=20, classes=["Benign"])
    cache = tmp_path / "cache"
    first = load_dataset(folder, progress=False, cache_dir=cache)
    key = next(cache.glob("*.json")).stem
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    killed = cache / f".{key}.{ended.pid}.train.abc123"  # as a killed load leaves it
    running = cache / f".{key}.{os.getpid()}.train.def456"  # a load still going on
    other = cache / f".{'0' * 32}.{ended.pid}.train.ghi789"  # another folder's
    for path in (killed, running, other):
        path.write_bytes(b"\0" * 64)
    (folder / "Benign_test.pcap.csv").touch()  # a newer time: the entry is stale
    second = load_dataset(folder, progress=False, cache_dir=cache)
    assert second.stats["cache"]["misses"] == 2
    assert not killed.exists() and running.exists() and other.exists()
    np.testing.assert_array_equal(first.x_train, second.x_train)


def test_an_interrupted_load_leaves_no_cache_files(tmp_path, monkeypatch):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=40, seed=3)
    calls = []
    parse = reader.read_feature_file

    def interrupted(path, variant, allocate):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return parse(path, variant, allocate)

    monkeypatch.setattr(reader, "read_feature_file", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        load_dataset(folder, progress=False, cache_dir=cache)
    assert list(cache.iterdir()) == []


INSTALLED_READ = """
import sys
import numpy as np
from mcu_ids.data import fastcsv
from mcu_ids.data.reader import read_header
from mcu_ids.data.schema import COLUMNS_39
path = sys.argv[1]
empty = lambda shape: np.empty(shape, np.float32)
x, _, positive, _ = fastcsv.read_rows(path, read_header(path), COLUMNS_39, empty)
print(fastcsv.__file__)
print(len(x), int(positive.sum()))
"""


@pytest.mark.slow
def test_an_installed_wheel_builds_and_uses_the_parser(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "wheel"), str(repo)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "wheel").glob("mcu_ids-*.whl"))
    assert "mcu_ids/data/fastcsv.c" in zipfile.ZipFile(wheel).namelist()
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    csv = write_values(tmp_path / "Benign_train.pcap.csv", ["0.1", "-2.5e-3", "inf"] * 26)
    environment = {
        "PYTHONPATH": str(tmp_path / "site"),
        "PATH": os.environ["PATH"],
        "MCU_IDS_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-c", INSTALLED_READ, str(csv)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    module, counts = done.stdout.splitlines()
    assert Path(module).is_relative_to(tmp_path / "site")
    assert counts == "2 26"
    assert len(list((tmp_path / "cache" / "native").glob("fastcsv-*.so"))) == 1


SANITIZED_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int fastcsv_count(const char *, int64_t, int64_t, int, int64_t *, int64_t *, int64_t *);
int fastcsv_parse(const char *, int, const int64_t *, const int64_t *, int, const int32_t *,
                  int, float *, uint8_t *, int64_t *, int64_t *);
/* Reads the file into a buffer of its exact size, so a read past its end is caught. */
int main(int argc, char **argv)
{
    FILE *file = fopen(argv[1], "rb");
    long size;
    char *data, *newline;
    int n_fields = 1, chunks;
    int32_t column_of_field[64];
    fseek(file, 0, SEEK_END);
    size = ftell(file);
    rewind(file);
    data = malloc((size_t)size);
    if (fread(data, 1, (size_t)size, file) != (size_t)size) return 2;
    newline = memchr(data, '\n', (size_t)size);
    for (char *p = data; p < newline; p++) n_fields += *p == ',';
    for (int i = 0; i < n_fields; i++) column_of_field[i] = i % 7 == 3 ? -1 : i;
    for (chunks = 1; chunks <= 9; chunks += 2) {
        int64_t bounds[10], rows[9], lines[9], first[10] = {0}, infs[9 * 2 * 64], failure[3];
        fastcsv_count(data, newline - data + 1, size, chunks, bounds, rows, lines);
        for (int i = 0; i < chunks; i++) first[i + 1] = first[i] + rows[i];
        float *out = malloc((size_t)(first[chunks] * n_fields + 1) * sizeof *out);
        uint8_t *nan_rows = malloc((size_t)first[chunks] + 1);
        int status = first[chunks] ? fastcsv_parse(data, chunks, bounds, first, n_fields,
                                                   column_of_field, n_fields, out, nan_rows,
                                                   infs, failure)
                                   : 0;
        printf("%ld %d\n", (long)first[chunks], status);
        free(out);
        free(nan_rows);
    }
    free(data);
    return 0;
}
"""


@pytest.mark.slow
def test_no_read_or_write_out_of_bounds_under_address_sanitizer(tmp_path):
    """The parser reads past fields up to a line end or padding: check that under ASan."""
    compiler = fastcsv.compiler_command()
    driver = tmp_path / "driver.c"
    driver.write_text(SANITIZED_DRIVER)
    program = tmp_path / "driver"
    source = resources.files("mcu_ids.data").joinpath(fastcsv.SOURCE_NAME)
    built = subprocess.run(
        [*compiler, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
        + ["-pthread", "-std=c99", "-o", str(program), str(driver), str(source), "-lm"],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        pytest.skip(f"no sanitizer runtime for {compiler[0]}: {built.stderr[-200:]}")
    row = ",".join(f"{i}.25" for i in range(len(COLUMNS_39)))
    rng = np.random.default_rng(5)
    texts = {
        "no_line_end": HEADER_39 + "\n" + row + "\n" + row,
        "cr_at_end": HEADER_39 + "\r\n" + row + "\r\n" + row + "\r",
        "header_only": HEADER_39 + "\n",
        "blank_lines": HEADER_39 + "\n\n" + row + "\n\n\n",
        "cut_line": HEADER_39 + "\n" + row + "\n" + row[:50],
        "long_field": HEADER_39 + "\n" + row.rsplit(",", 1)[0] + ",0." + "0" * 300 + "1\n",
    }
    for name, text in texts.items():
        (tmp_path / f"{name}.csv").write_text(text, newline="")
    write_values(tmp_path / "values.csv", random_numbers(rng, 20_000) + EDGE_VALUES)
    for path in sorted(tmp_path.glob("*.csv")):
        done = subprocess.run([str(program), str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{path.name}: {done.stderr[-2000:]}"
        assert len(set(done.stdout.splitlines())) == 1, f"{path.name}: {done.stdout}"
