"""Read a dataset CSV's rows with a small native parser compiled on first use.

The dataset's files hold numbers only, so a parser that knows nothing else is several times
faster than a general CSV reader. ``fastcsv.c`` is compiled once with the system C compiler into
the mcu-ids cache folder (the library's name carries a hash of the source, flags and compiler) and
called through ``ctypes``: the file is memory-mapped, split at line starts into one chunk per CPU,
each chunk's rows counted and then parsed by its own thread straight into the caller's row-major
float32 array (a memory-mapped cache file, say), with no intermediate table.

Its float32 values are bit-identical to the general reader's (pyarrow's correctly rounded
conversion): a number of up to 19 significant digits and a power of ten within 1e+-22 is
converted through one double multiplication, whose result is cast to float32 unless it lies so
close to a float32 rounding boundary that the cast could differ; those values (about 3 in 10^8),
and all others, are converted by ``strtof``, which rounds correctly. So there is no double
rounding. Anything it does not accept (text, quotes, spaces, a wrong field count, a repeated
header row, a lone carriage return, a header without a line end) makes :func:`read_rows` return
``None``, so the caller reads the file with the general reader, which applies every rule and
names the file, line and column in its errors. Without a C compiler, or with
``MCU_IDS_NATIVE_CSV=0``, the general reader is used for every file.
"""

import ctypes
import functools
import hashlib
import logging
import mmap
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

NATIVE_ENV = "MCU_IDS_NATIVE_CSV"
SOURCE_NAME = "fastcsv.c"
COMPILERS = ("cc", "gcc", "clang")
# -O3: 12 % faster than -O2 with gcc (measured). -ffp-contract=off: the conversion's error bound
# counts one rounding per operation.
COMPILE_FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC", "-pthread", "-ffp-contract=off")
LINK_FLAGS = ("-lm",)
COMPILE_TIMEOUT_S = 120
# Below this much data per chunk, starting a thread costs more than it saves.
MIN_CHUNK_BYTES = 1 << 20
PROBLEMS = {
    1: "a value that is not a plain number",
    2: "a wrong number of fields",
    3: "a carriage return without a line feed",
    4: "more rows than counted",
    5: "no memory for a copy of the last lines",
    -1: "no memory for the chunk list",
}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int


def enabled() -> bool:
    """Whether the native parser may be used (``MCU_IDS_NATIVE_CSV=0`` turns it off)."""
    return os.environ.get(NATIVE_ENV, "1").strip() not in ("0", "false", "no", "off")


def compiler_command() -> list[str] | None:
    """The C compiler to use: ``$CC`` if set, else the first of cc, gcc, clang on the PATH."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in COMPILERS:
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _compiler_identity(compiler: list[str]) -> str:
    done = subprocess.run(
        [*compiler, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S
    )
    return done.stdout


def library_path(cache_dir: Path, compiler: list[str]) -> Path:
    """Where the library built from this source with ``compiler`` lives in ``cache_dir``."""
    source = resources.files(__package__).joinpath(SOURCE_NAME).read_bytes()
    key = hashlib.sha256()
    for part in (
        source,
        " ".join(compiler).encode(),
        _compiler_identity(compiler).encode(),
        " ".join(COMPILE_FLAGS + LINK_FLAGS).encode(),
        platform.machine().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return Path(cache_dir) / "native" / f"fastcsv-{key.hexdigest()[:24]}.so"


def build_library(cache_dir: Path, compiler: list[str]) -> Path:
    """Compile ``fastcsv.c`` into ``cache_dir`` unless it is built already; return the library.

    Raises ``OSError`` or ``subprocess.SubprocessError`` when it cannot be built.
    """
    target = library_path(cache_dir, compiler)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        with resources.as_file(resources.files(__package__).joinpath(SOURCE_NAME)) as source:
            command = [*compiler, *COMPILE_FLAGS, "-o", tmp, str(source), *LINK_FLAGS]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S
            )
        if done.returncode != 0:
            raise subprocess.SubprocessError(
                f"{shlex.join(command)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        # Renamed into place whole, so a process loading it never sees a half-written library.
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.debug("built the native CSV parser: %s", target)
    return target


@functools.cache
def load_library() -> ctypes.CDLL | None:
    """Build (once) and load the native parser; ``None`` when it cannot be built or loaded."""
    from mcu_ids.data.reader import default_cache_dir  # here: the reader imports this module

    compiler = compiler_command()
    if compiler is None:
        log.debug("no C compiler (cc, gcc, clang or $CC); using the general CSV reader")
        return None
    try:
        path = build_library(default_cache_dir(), compiler)
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:
            # A damaged library (a copy cut short, say) is built again, once.
            log.debug("cannot load %s (%s); building it again", path, error)
            path.unlink(missing_ok=True)
            library = ctypes.CDLL(str(build_library(default_cache_dir(), compiler)))
    except (OSError, subprocess.SubprocessError) as error:
        log.warning(
            "cannot build the native CSV parser (%s); reading with pyarrow, several times slower",
            error,
        )
        return None
    library.fastcsv_count.argtypes = [_P, _I64, _I64, _INT, _P, _P, _P]
    library.fastcsv_count.restype = _INT
    library.fastcsv_parse.argtypes = [_P, _INT, _P, _P, _INT, _P, _INT, _P, _P, _P, _P]
    library.fastcsv_parse.restype = _INT
    return library


def _thread_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _column_map(header: list[str], columns: tuple[str, ...]) -> np.ndarray | None:
    """The output column of each field of the file (-1: not read), or None if one is missing."""
    if sorted(name for name in header if name in columns) != sorted(columns):
        return None
    return np.array([columns.index(n) if n in columns else -1 for n in header], dtype=np.int32)


def _address(array: np.ndarray) -> int:
    return array.ctypes.data


def _mapping_address(mapped: mmap.mmap) -> int:
    """The address of a mapping's first byte, without keeping a buffer export on it.

    An export would stop the mapping from closing for as long as anything (a traceback kept by
    a log handler, say) holds the frame that made it; the address stays valid until it closes.
    """
    view = np.frombuffer(mapped, dtype=np.uint8)
    address = view.ctypes.data
    del view
    return address


def _count_rows(library, address: int, body: int, size: int):
    """Split the body into chunks at line starts; return their bounds, first rows and lines.

    Returns None when the native side cannot allocate its chunk list.
    """
    n_chunks = max(1, min(_thread_count(), (size - body) // MIN_CHUNK_BYTES))
    bounds = np.zeros(n_chunks + 1, dtype=np.int64)
    rows = np.zeros(n_chunks, dtype=np.int64)
    lines = np.zeros(n_chunks, dtype=np.int64)
    status = library.fastcsv_count(
        address, body, size, n_chunks, _address(bounds), _address(rows), _address(lines)
    )
    if status != 0:
        return None  # no memory for the chunk list: the general reader will say so
    first_row = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    return bounds, first_row, lines


def _parse_chunks(library, address: int, bounds, first_row, column_of_field, x: np.ndarray):
    """Parse the chunks into ``x``; return the status, the NaN flags, inf counts and failure."""
    n_chunks = len(bounds) - 1
    n_columns = x.shape[1]
    nan_rows = np.zeros(len(x), dtype=np.uint8)
    inf_counts = np.zeros((n_chunks, 2, n_columns), dtype=np.int64)
    failure = np.zeros(3, dtype=np.int64)
    status = library.fastcsv_parse(
        address,
        n_chunks,
        _address(bounds),
        _address(first_row),
        len(column_of_field),
        _address(column_of_field),
        n_columns,
        _address(x),
        _address(nan_rows),
        _address(inf_counts),
        _address(failure),
    )
    return status, nan_rows.view(bool), inf_counts, failure


def _parse_mapped(library, mapped: mmap.mmap, path: Path, columns, column_of_field, allocate):
    """Count and parse the mapped file; return the rows and their counts, or None."""
    header_end = mapped.find(b"\n")
    if header_end < 0:
        return None  # the general reader decides what a lone header line is
    if b"\r" in mapped[:header_end].rstrip(b"\r"):
        return None  # old Mac line ends: the general reader splits lines at a lone CR
    address = _mapping_address(mapped)
    counted = _count_rows(library, address, header_end + 1, len(mapped))
    if counted is None:
        return None
    bounds, first_row, lines = counted
    shape = (int(first_row[-1]), len(columns))
    x = allocate(shape)
    if x.shape != shape or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise ValueError(f"allocate gave a {x.dtype} {x.shape} array, not C-ordered float32")
    if not len(x):
        none = np.zeros(len(columns), dtype=np.int64)
        return x, np.zeros(0, dtype=bool), none, none
    status, nan_rows, inf_counts, failure = _parse_chunks(
        library, address, bounds, first_row, column_of_field, x
    )
    if status != 0:
        chunk, line, field = (int(v) for v in failure)
        log.debug(
            "%s: the native parser stopped at line %d, field %d (%s); the general reader reads it",
            path.name,
            1 + int(lines[:chunk].sum()) + line,
            field + 1,
            PROBLEMS.get(status, f"status {status}"),
        )
        return None
    return x, nan_rows, inf_counts[:, 0].sum(axis=0), inf_counts[:, 1].sum(axis=0)


def read_rows(path: Path, header: list[str], columns: tuple[str, ...], allocate):
    """Parse a dataset CSV's rows into ``allocate((rows, len(columns)))``, in ``columns`` order.

    Returns ``(x, nan_rows, positive_inf, negative_inf)``: the array, a bool per row that holds a
    NaN, and +inf and -inf counts per column. Returns ``None`` when the native parser is off or
    unavailable, or the file holds anything it does not accept; the caller then uses the general
    reader. ``allocate`` may have been called by then (its array is left unused).
    """
    if not enabled():
        return None
    column_of_field = _column_map(header, columns)
    if column_of_field is None:
        return None
    library = load_library()
    if library is None:
        return None
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _parse_mapped(library, mapped, path, columns, column_of_field, allocate)
