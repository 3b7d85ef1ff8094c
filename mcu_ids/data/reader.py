"""Read a CICIoMT2024 CSV folder into float32 arrays, fast, with a cache of the parsed rows.

Rules the reader applies (each one is counted in ``Dataset.stats``, never silent):

- Files: every ``*.csv`` under the folder (sub-folders and linked folders included) must be
  named ``<class>[<n>]_<train|test>.pcap.csv``; other CSV names are an error, and so is the same
  name twice (a copy) or a link to a missing file. macOS metadata files (``._*``,
  ``__MACOSX/``) are skipped with a warning. Numbered files of a class merge. All files must use
  the same header variant (45 or 39 columns). Lines may end with LF, CRLF or a lone CR.
- Splits: a class with both ``_train`` and ``_test`` rows keeps the dataset's split. A class with
  rows of only one split is split 80/20 on its own, stratified, with ``seed`` (per class,
  ``round(0.2 * rows)`` go to test). Then ``split`` is "dataset files" when every class came split,
  "stratified 80/20, seed N" when none did, and names both when the folder mixes the two.
- NaN: a row with any missing or NaN value is dropped and counted per file and in total.
- +/-inf: kept in the arrays and counted per column; the scaler clips them.
- Duplicated header rows inside a file are skipped and counted.
- Text in a numeric column, or a line with the wrong number of fields, is a DataError naming the
  file, the line and the column.
- An empty file (0 bytes, not even a header) is a DataError: it is a broken copy; so is a blank
  first line, or a first line with no end within 64 KiB. A file with a header and no rows (with
  or without a line end after it) is read as zero rows, logged as a warning and listed in
  ``stats["header_only_files"]``.
- De-duplication (optional) removes rows whose features are bitwise identical (as float32) to an
  earlier row of the same class: within train, within test, and test rows that occur in train.
  Classes that are split with the seed are de-duplicated before the split, so no test row occurs
  in train. Rows are found with a 64-bit hash and then compared in full, so a distinct row is
  never dropped.
"""

import hashlib
import json
import logging
import mmap
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from mcu_ids.data import fastcsv
from mcu_ids.data import labels as taxonomy
from mcu_ids.data.schema import columns_of, detect_variant, parse_header
from mcu_ids.errors import DataError
from mcu_ids.fileio import new_file_mode, write_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "MCU_IDS_CACHE"
# Bump when the cached arrays or their stats change meaning, so old cache entries are ignored.
CACHE_FORMAT = 2
SYNTHETIC_MARKER = "SYNTHETIC.txt"
TEST_FRACTION = 0.2
# Large enough to keep pyarrow's threads busy, small enough to bound the parser's working memory.
BLOCK_SIZE_BYTES = 1 << 20
# Rows gathered per transpose step: 45 float32 columns x 2048 rows = 360 KiB, inside L2 cache.
TRANSPOSE_ROWS = 2048
COUNT_CHUNK_BYTES = 1 << 24
# A header line is a few hundred bytes; a first line longer than this is not one.
MAX_HEADER_BYTES = 1 << 16
BOM = b"\xef\xbb\xbf"
# What pyarrow reads as a float: decimal numbers with an optional exponent, inf and nan.
_NUMBER = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)", re.ASCII | re.IGNORECASE
)
NULL_TOKENS = ("", "NaN", "nan", "-NaN", "-nan", "NA", "N/A", "n/a", "NULL", "null")
_HASH_SEED = 0x5EED  # fixed, so hashes (never stored) are the same in every run
_MAX_NAMES_SHOWN = 10


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: raw float32 features and int64 labels indexing ``class_names``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    variant: str
    split: str
    synthetic: bool
    view: str
    stats: dict = field(repr=False)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.feature_names)

    @property
    def n_classes(self) -> int:
        """Number of labels present (the width of the model's output)."""
        return len(self.class_names)


@dataclass
class _Part:
    """The rows of one file after parsing (in memory or memory-mapped from the cache)."""

    path: Path
    class_name: str
    split: str
    x: np.ndarray
    stats: dict


def default_cache_dir() -> Path:
    """Return the cache folder: ``$MCU_IDS_CACHE`` if set, else ``~/.cache/mcu-ids``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mcu-ids"


def _files_under(folder: Path) -> list[Path]:
    """Every entry under ``folder`` that is not a folder, through linked folders too, sorted."""
    found, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs.clear()
            continue
        seen.add(real)
        found.extend(Path(root) / name for name in names)
    return sorted(found)


def find_dataset_files(folder: Path) -> list[tuple[Path, str, str]]:
    """List ``(path, class_name, split)`` for every dataset CSV under ``folder``, in stable order.

    Order: taxonomy class order, then train before test, then the file number.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"dataset folder {str(folder)!r} does not exist or is not a folder",
            hint="pass the folder that holds the CICIoMT2024 *.pcap.csv files",
        )
    csvs, broken, skipped = [], [], []
    for path in _files_under(folder):
        if path.suffix.lower() != ".csv":
            continue
        relative = path.relative_to(folder)
        if path.name.startswith("._") or "__MACOSX" in relative.parts:
            skipped.append(str(relative))  # macOS resource forks that unzipping leaves behind
        elif not path.is_file():
            broken.append(str(relative))
        else:
            csvs.append(path)
    if skipped:
        log.warning("skipped %d macOS metadata file(s): %s", len(skipped), _listed(skipped))
    if broken:
        raise DataError(
            f"{_listed(broken)} in {str(folder)!r}: link(s) to a file that does not exist",
            hint="restore the file the link points to, or remove the link",
        )
    if not csvs:
        found = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(found[:_MAX_NAMES_SHOWN]) or "nothing"
        if len(found) > _MAX_NAMES_SHOWN:
            shown += f", ... ({len(found)} entries)"
        raise DataError(
            f"no CSV files in {str(folder)!r} (found: {shown}); "
            f"expected files named {taxonomy.FILE_PATTERN}",
            hint="point at the folder holding the dataset's CSV files, e.g. .../attacks/CSV",
        )
    entries, by_name = [], {}
    for path in csvs:
        relative = str(path.relative_to(folder))
        try:
            class_name, split = taxonomy.class_from_filename(path.name)
        except DataError as error:
            where = "" if relative == path.name else f" (at {relative})"
            raise DataError(error.message + where, hint=error.hint) from None
        by_name.setdefault(path.name, []).append(relative)
        number = re.search(r"(\d*)_(?:train|test)\.pcap\.csv$", path.name, re.I).group(1)
        order = (
            taxonomy.CLASSES.index(class_name),
            taxonomy.SPLITS.index(split),
            int(number or 0),
            str(path),
        )
        entries.append((order, path, class_name, split))
    copies = [paths for paths in by_name.values() if len(paths) > 1]
    if copies:
        raise DataError(
            "the same file name occurs more than once: "
            + "; ".join(" and ".join(paths) for paths in copies),
            hint="a dataset file name is unique; remove the copies, or load the folders apart",
        )
    entries.sort(key=lambda entry: entry[0])
    return [(path, class_name, split) for _, path, class_name, split in entries]


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += f", ... ({len(names)} in all)"
    return shown


def _first_line(path: Path) -> tuple[bytes, bool]:
    """The file's first line (without its end) and whether a line end follows it.

    A line ends at a line feed, a carriage return, or both; a first line longer than
    ``MAX_HEADER_BYTES`` is a DataError (the file has no line ends where a header should be).
    """
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 2)
    end = min((i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0), default=-1)
    if end < 0:
        if len(head) > MAX_HEADER_BYTES:
            raise DataError(
                f"{path.name}: no line end in its first {MAX_HEADER_BYTES:,} bytes, so it has no "
                "header line",
                hint="the file is damaged or not a dataset CSV; restore it from the archive",
            )
        return head, False
    return head[:end], True


def read_header(path: Path) -> list[str]:
    """Return the column names of a CSV file's first line; an empty file is a DataError."""
    first, _ = _first_line(path)
    if not first.strip():
        if path.stat().st_size > len(first) + 2:
            raise DataError(
                f"{path.name}: line 1 is blank; the header must be the first line",
                hint="delete the blank line(s) before the header",
            )
        raise DataError(
            f"{path.name}: the file is empty (no header line)",
            hint="the copy is broken; restore it from the dataset archive or remove it",
        )
    return parse_header(first.decode("utf-8-sig", errors="replace"))


def _header_only(path: Path) -> bool:
    """Whether the file holds its header line and nothing else but line ends and blanks."""
    first, _ = _first_line(path)
    with open(path, "rb") as handle:
        handle.seek(len(first))
        rest = handle.read(MAX_HEADER_BYTES)
        return not rest.strip() and not handle.read(1)


def check_same_variant(variants: dict[Path, str]) -> str:
    """Return the one header variant used by every file, or raise a DataError naming the files."""
    by_variant: dict[str, list[str]] = {}
    for path, variant in variants.items():
        by_variant.setdefault(variant, []).append(path.name)
    if len(by_variant) == 1:
        return next(iter(by_variant))
    described = "; ".join(
        f"{variant} columns: {', '.join(names[:_MAX_NAMES_SHOWN])}"
        + (f", ... ({len(names)} files)" if len(names) > _MAX_NAMES_SHOWN else "")
        for variant, names in sorted(by_variant.items())
    )
    raise DataError(
        f"the files mix header variants ({described})",
        hint="load one revision of the dataset at a time; keep its files in their own folder",
    )


def _csv_options(header: list[str], columns: tuple[str, ...]):
    read = pacsv.ReadOptions(
        column_names=header, skip_rows=1, block_size=BLOCK_SIZE_BYTES, use_threads=True
    )
    # The dataset never quotes values; without quote handling pyarrow's tokenizer is faster.
    parse = pacsv.ParseOptions(quote_char=False, double_quote=False)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.float32() for name in columns},
        include_columns=list(columns),
        null_values=list(NULL_TOKENS),
        strings_can_be_null=False,
    )
    return read, parse, convert


def _find_bad_line(path: Path, n_fields: int, column: int | None) -> tuple[int, int | None, str]:
    """Scan a file for the first line pyarrow could not read; return (line, column, problem).

    Only runs after pyarrow failed, so a plain scan is fast enough. ``column`` narrows the value
    check to the column pyarrow named.
    """
    # Lines end at LF, CRLF or a lone CR, as pyarrow splits them.
    lines = path.read_bytes().splitlines()
    header = lines[0].removeprefix(BOM) if lines else b""
    for line_no, line in enumerate(lines[1:], start=2):
        if not line or line.removeprefix(BOM) == header:
            continue  # pyarrow skips empty lines; a line of spaces is not empty to it
        fields = line.split(b",")
        if len(fields) != n_fields:
            return line_no, None, f"has {len(fields)} fields, expected {n_fields}"
        checked = range(n_fields) if column is None else (column,)
        for index in checked:
            text = fields[index].decode("utf-8", errors="replace")
            # A null token counts only as written; a number may have spaces around it.
            if text not in NULL_TOKENS and not _NUMBER.fullmatch(text.strip()):
                return line_no, index, f"holds {text!r}, which is not a number"
    return 0, column, ""


def _raise_unreadable(path: Path, header: list[str], error: pa.ArrowInvalid) -> None:
    match = re.search(r"column #(\d+)", str(error))
    column = int(match.group(1)) if match else None
    line_no, index, problem = _find_bad_line(path, len(header), column)
    if line_no:
        where = f"line {line_no}" + (f", column {header[index]!r}" if index is not None else "")
        raise DataError(
            f"{path.name}: {where} {problem}",
            hint="fix or delete that line; every value must be a number, NaN or inf",
        ) from error
    raise DataError(
        f"{path.name}: cannot be read as CSV numbers ({error})",
        hint="check the file for damaged lines; every value must be a number, NaN or inf",
    ) from error


def _without_header_rows(path: Path) -> tuple[bytes, int]:
    """Return the file's bytes without repeated header lines after the first, and their count."""
    data = path.read_bytes()
    first_end = data.find(b"\n") + 1
    header = data[:first_end].rstrip(b"\r\n").removeprefix(BOM)
    # A repeat may or may not carry the byte order mark the first line has.
    pattern = re.compile(
        rb"^(?:" + re.escape(BOM) + rb")?" + re.escape(header) + rb"[ \t]*(?:\r?\n|\Z)",
        re.MULTILINE,
    )
    body, count = pattern.subn(b"", data[first_end:])
    return data[:first_end] + body, count


def _parse_table(path: Path, header: list[str], columns: tuple[str, ...]) -> tuple[pa.Table, int]:
    """Parse a CSV file into a float32 table; return it and the number of header rows skipped."""
    read, parse, convert = _csv_options(header, columns)
    options = {"read_options": read, "parse_options": parse, "convert_options": convert}
    try:
        return pacsv.read_csv(path, **options), 0
    except pa.ArrowInvalid as first_error:
        # The fast path failed; the file may repeat its header line, which is tolerated.
        data, repeated = _without_header_rows(path)
        if not repeated:
            _raise_unreadable(path, header, first_error)
        try:
            table = pacsv.read_csv(
                pa.BufferReader(data), read_options=read, convert_options=convert
            )
        except pa.ArrowInvalid as error:
            _raise_unreadable(path, header, error)
        log.warning("%s: skipped %d repeated header row(s)", path.name, repeated)
        return table, repeated


def _float32_values(chunk: pa.Array) -> np.ndarray:
    """View a float32 Arrow array as numpy, nulls as NaN (Array.to_numpy would import pandas)."""
    if chunk.null_count:
        chunk = chunk.fill_null(np.float32("nan"))
    return np.frombuffer(
        chunk.buffers()[1], dtype=np.float32, count=len(chunk), offset=chunk.offset * 4
    )


def _new_array(shape: tuple[int, int]) -> np.ndarray:
    return np.empty(shape, dtype=np.float32)


def _table_to_array(table: pa.Table, columns: tuple[str, ...], allocate=_new_array):
    """Copy a float32 table into one C-ordered float32 array and count NaN rows and infs.

    Returns ``(x, nan_rows, positive_inf, negative_inf)``: the array, a bool per row, and the
    count of +inf and -inf per column. Works through row slices small enough to stay in the CPU
    cache: a slice's columns are gathered and then transposed into place, which is several times
    faster than writing whole columns with a stride. ``allocate(shape)`` gives the float32 array
    to fill (a memory-mapped cache file, say).
    """
    n_columns = len(columns)
    out = allocate((table.num_rows, n_columns))
    nan_rows = np.zeros(table.num_rows, dtype=bool)
    positive = np.zeros(n_columns, dtype=np.int64)
    negative = np.zeros(n_columns, dtype=np.int64)
    block = np.empty((n_columns, TRANSPOSE_ROWS), dtype=np.float32)
    start = 0
    for batch in table.select(list(columns)).to_batches():
        values = [_float32_values(batch.column(i)) for i in range(n_columns)]
        for offset in range(0, batch.num_rows, TRANSPOSE_ROWS):
            rows = min(TRANSPOSE_ROWS, batch.num_rows - offset)
            piece = block[:, :rows]
            for i in range(n_columns):
                piece[i] = values[i][offset : offset + rows]
            nan_rows[start : start + rows] = np.isnan(piece).any(axis=0)
            if np.isinf(piece).any():
                positive += np.count_nonzero(piece == np.inf, axis=1)
                negative += np.count_nonzero(piece == -np.inf, axis=1)
            out[start : start + rows] = piece.T
            start += rows
    return out, nan_rows, positive, negative


def read_feature_file(path: Path, variant: str, allocate=_new_array) -> tuple[np.ndarray, dict]:
    """Read one dataset CSV into a float32 array in the variant's column order, and its stats.

    Rows with a NaN are dropped and counted; +/-inf values are kept and counted per column.
    ``allocate(shape)`` gives the array the rows are written into before NaN rows are dropped.
    The native parser (:mod:`mcu_ids.data.fastcsv`) reads the file when it can; otherwise, or
    when the file holds anything but plain numbers, pyarrow does, with the same result.
    """
    path = Path(path)
    columns = columns_of(variant)
    header = read_header(path)
    header_rows = 0
    if _header_only(path):
        none = np.zeros(len(columns), dtype=np.int64)
        parsed = allocate((0, len(columns))), np.zeros(0, dtype=bool), none, none
    else:
        parsed = fastcsv.read_rows(path, header, columns, allocate)
    if parsed is None:
        table, header_rows = _parse_table(path, header, columns)
        parsed = _table_to_array(table, columns, allocate)
        del table
    x, nan_rows, positive, negative = parsed
    inf_values = {
        name: {"+inf": int(positive[i]), "-inf": int(negative[i])}
        for i, name in enumerate(columns)
        if positive[i] or negative[i]
    }
    dropped = int(np.count_nonzero(nan_rows))
    if dropped:
        x = x[~nan_rows]
    stats = {
        "rows_read": int(len(nan_rows)),
        "nan_rows_dropped": dropped,
        "header_rows_skipped": header_rows,
        "inf_values": inf_values,
    }
    return x, stats


def _row_capacity(paths: list[Path]) -> int:
    """The most rows these files can hold.

    A row takes at least one byte per field of its file's header (its commas and its line end),
    so a file has at most ``size // fields`` rows, and one more if its last line has no end.
    """
    return sum(path.stat().st_size // len(read_header(path)) + 1 for path in paths)


def _line_ends(path: Path) -> int:
    """Line feeds plus carriage returns: at least the number of line ends, whatever their kind."""
    count = 0
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(COUNT_CHUNK_BYTES):
            count += chunk.count(b"\n") + chunk.count(b"\r")
    return count


class _SplitRows:
    """The rows of every file of one split, appended in file order into one float32 array.

    The array is reserved for the most rows the files can hold (:func:`_row_capacity`) without
    committing memory or disk: anonymous memory mapped with ``MAP_NORESERVE``, or a sparse file
    whose blocks are allocated slot by slot. Each file's parser writes straight into its slot, so
    when the files give the train/test split the loaded arrays are these rows, with no copy.
    """

    def __init__(self, capacity: int, n_columns: int, path: Path | None = None):
        self.n_columns = n_columns
        self.row_bytes = n_columns * 4
        self.used = 0
        self.path = path
        self._fd = None
        size = max(capacity, 1) * self.row_bytes
        if path is None:
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
            self._map = mmap.mmap(-1, size, flags=flags)
        else:
            self._fd = os.open(path, os.O_RDWR)
            try:
                os.ftruncate(self._fd, size)
                self._map = mmap.mmap(self._fd, size)
            except BaseException:
                os.close(self._fd)
                raise
        self.array = np.frombuffer(self._map, dtype=np.float32).reshape(-1, n_columns)

    def fits(self, n_rows: int) -> bool:
        """Whether ``n_rows`` more rows fit in what is reserved."""
        return self.used + n_rows <= len(self.array)

    def _after_used(self, n_rows: int) -> np.ndarray:
        if not self.fits(n_rows):
            raise ValueError(f"{n_rows} rows do not fit the {len(self.array)} reserved")
        return self.array[self.used : self.used + n_rows]

    def slot(self, n_rows: int) -> np.ndarray:
        """The rows after the last appended part, for a file of ``n_rows`` rows.

        For a file-backed array the slot's blocks are allocated now, so a full disk is an
        OSError here and never a SIGBUS while the parser writes into the mapping.
        """
        rows = self._after_used(n_rows)
        if self._fd is not None and n_rows and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(self._fd, self.used * self.row_bytes, n_rows * self.row_bytes)
        return rows

    def append(self, x: np.ndarray) -> tuple[int, int]:
        """Place a file's rows after the others (a copy only if they are not in their slot yet)."""
        target = self._after_used(len(x))  # its blocks came with its slot
        if len(x) and x.ctypes.data != target.ctypes.data:
            target[...] = x
        start = self.used
        self.used += len(x)
        return start, len(x)

    def rows(self) -> np.ndarray:
        """The appended rows."""
        return self.array[: self.used]

    def close(self) -> None:
        """Give back the mapping (views taken from it keep it alive until they are dropped)."""
        self.array = None
        try:
            self._map.close()
        except BufferError:
            pass  # a view still uses it; it is unmapped when the last view goes
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _signature(files, variant: str) -> list:
    """What a cache entry must match: the header variant and each file's path, size, times and
    inode (a copy that keeps the modification time, as ``cp -p`` makes, is a new inode)."""
    signature = [variant]
    for path, _, _ in files:
        stat = path.stat()
        signature.append(
            [str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        )
    return signature


def _count(value, what: str) -> int:
    """``value`` if it is a non-negative int (as a cache entry must hold), else a ValueError."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} {value!r} is not a count")
    return value


def _read_only_rows(path: Path, n_rows: int, n_columns: int) -> np.ndarray:
    """Map a cached split's rows copy-on-write: changes stay in this process, never the cache."""
    if n_rows == 0:
        return np.empty((0, n_columns), dtype=np.float32)
    return np.asarray(np.memmap(path, dtype=np.float32, mode="c", shape=(n_rows, n_columns)))


class _FolderCache:
    """The cache entry of one dataset folder: every file's parsed rows, split by split.

    Files: ``<folder key>.json`` (the signature of the files it was made from, each file's stats
    and place) and one raw float32 file per split, named with the signature's hash. The rows are
    parsed straight into those files, which are committed by renaming them into place and then
    writing the JSON; arrays of an earlier state of the folder are removed after that. A change to
    any file of the folder makes the whole entry stale.
    """

    def __init__(self, cache_dir: Path, folder: Path, files, variant: str, n_columns: int):
        self.dir = cache_dir
        # fsencode: a folder's name need not be valid UTF-8.
        key_text = f"{CACHE_FORMAT}\0".encode() + os.fsencode(folder.resolve())
        self.key = hashlib.sha256(key_text).hexdigest()[:32]
        self.meta = cache_dir / f"{self.key}.json"
        self.signature = _signature(files, variant)
        state = hashlib.sha256(json.dumps(self.signature).encode("utf-8")).hexdigest()[:16]
        self.names = {which: f"{self.key}.{state}.{which}.f32" for which in taxonomy.SPLITS}
        self.files = files
        self.n_columns = n_columns
        self.tmp: dict[str, Path] = {}

    def load(self):
        """Return ``(rows per split, file stats, placements)``, or None if absent or stale.

        An entry that does not hold together (damaged or edited) is ignored with a warning, and
        the next load that parses the folder replaces it.
        """
        if not self.meta.is_file():
            return None
        try:
            meta = json.loads(self.meta.read_text())
            if not isinstance(meta, dict):
                raise ValueError("it is not a JSON object")
            if meta.get("signature") != self.signature or meta.get("columns") != self.n_columns:
                return None
            rows = {}
            for which in taxonomy.SPLITS:
                path = self.dir / meta["arrays"][which]["file"]
                n_rows = _count(meta["arrays"][which]["rows"], "rows")
                if path.parent != self.dir or path.stat().st_size != n_rows * self.n_columns * 4:
                    raise ValueError(f"{path.name} does not hold {n_rows} rows")
                rows[which] = _read_only_rows(path, n_rows, self.n_columns)
            files, placements = meta["files"], meta["placements"]
            self._check_layout(files, placements, {w: len(x) for w, x in rows.items()})
            return rows, files, placements
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("ignoring unreadable cache entry %s: %s", self.meta.name, error)
            return None

    def _check_layout(self, files, placements, n_rows: dict[str, int]) -> None:
        """Raise ValueError unless every file's stats and place fit the entry's arrays."""
        if not (isinstance(files, list) and isinstance(placements, list)):
            raise ValueError("its file list is not a list")
        if not len(files) == len(placements) == len(self.files):
            raise ValueError("its file list does not match the folder's")
        end = dict.fromkeys(taxonomy.SPLITS, 0)
        for (path, _, split), stats, place in zip(self.files, files, placements, strict=True):
            if stats.get("file") != path.name:
                raise ValueError(f"it lists {stats.get('file')!r} where {path.name!r} is")
            for key in ("rows_read", "nan_rows_dropped", "header_rows_skipped"):
                _count(stats[key], key)
            for counts in stats["inf_values"].values():
                _count(counts["+inf"], "+inf")
                _count(counts["-inf"], "-inf")
            # Unpacking refuses a placement that is not two values.
            start, length = (_count(value, "placement") for value in place)
            if start != end[split]:
                raise ValueError(f"the rows of {path.name} are not where they belong")
            end[split] += length
        if end != n_rows:
            raise ValueError("its files' rows do not add up to its arrays")

    def new_rows(self, which: str, capacity: int) -> _SplitRows:
        """A file-backed :class:`_SplitRows` for one split, in a temporary file of the entry."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.key}.{os.getpid()}.{which}.", dir=self.dir)
        os.close(fd)
        self.tmp[which] = Path(tmp)
        return _SplitRows(capacity, self.n_columns, Path(tmp))

    def remove_abandoned(self) -> None:
        """Delete the temporary files of earlier loads of this folder whose process is gone.

        A load that is killed cannot remove its files; they are named with the process id
        (``.<folder key>.<pid>.<split>.*``), so the next load of the folder can.
        """
        for tmp in self.dir.glob(f".{self.key}.*"):
            pid = tmp.name.split(".")[2]
            if pid.isdigit() and not _process_exists(int(pid)):
                log.info("removing %s, left by a load that was stopped", tmp.name)
                try:
                    tmp.unlink(missing_ok=True)
                except OSError as error:
                    log.warning("could not remove %s: %s", tmp, error)

    def commit(self, splits: dict[str, _SplitRows], files: list[dict], placements: list) -> dict:
        """Make the entry current; return each split's rows mapped copy-on-write from it.

        If it cannot be made current, no array of it stays where a stats file could name it.
        """
        try:
            self._put_in_place(splits, files, placements)
        except OSError:
            for name in self.names.values():
                try:
                    (self.dir / name).unlink(missing_ok=True)
                except OSError:
                    pass  # the caller copies the rows out of the mapping in any case
            raise
        self._remove_old_arrays()
        return {
            which: _read_only_rows(self.dir / self.names[which], rows.used, self.n_columns)
            for which, rows in splits.items()
        }

    def _put_in_place(self, splits: dict[str, _SplitRows], files: list, placements: list):
        for which, rows in splits.items():
            os.truncate(self.tmp[which], rows.used * rows.row_bytes)
            os.chmod(self.tmp[which], new_file_mode())
            os.replace(self.tmp.pop(which), self.dir / self.names[which])
        meta = {
            "format": CACHE_FORMAT,
            "signature": self.signature,
            "columns": self.n_columns,
            "arrays": {
                which: {"file": self.names[which], "rows": rows.used}
                for which, rows in splits.items()
            },
            "files": files,
            "placements": placements,
        }
        # Written last: the entry counts only once its arrays are in place.
        write_atomic(self.meta, json.dumps(meta))

    def _remove_old_arrays(self) -> None:
        """Delete the arrays of earlier states of the folder (a failure costs disk, not data)."""
        current = set(self.names.values())
        for old in self.dir.glob(f"{self.key}.*.f32"):
            if old.name not in current:
                try:
                    old.unlink(missing_ok=True)
                except OSError as error:
                    log.warning("could not remove the old cache array %s: %s", old, error)

    def discard(self) -> None:
        """Remove the temporary files of an entry that will not be committed."""
        for tmp in self.tmp.values():
            tmp.unlink(missing_ok=True)
        self.tmp = {}


def _new_splits(files, n_columns: int, entry: "_FolderCache | None"):
    """Reserve the rows of each split, in the cache entry's files when it can be written.

    Returns the splits and the entry (None when the cache is off or cannot be written: a cache
    that cannot be written costs a warning, not the load).
    """
    capacity = {
        which: _row_capacity([p for p, _, split in files if split == which])
        for which in taxonomy.SPLITS
    }
    if entry is not None:
        try:
            return {which: entry.new_rows(which, n) for which, n in capacity.items()}, entry
        except OSError as error:
            log.warning("could not cache the dataset in %s: %s", entry.dir, error)
            entry.discard()
    try:
        return {which: _SplitRows(n, n_columns) for which, n in capacity.items()}, None
    except OSError:
        # No address space for that bound (a kernel that commits every mapping): count lines.
        capacity = {
            which: sum(_line_ends(p) + 1 for p, _, split in files if split == which)
            for which in taxonomy.SPLITS
        }
        return {which: _SplitRows(n, n_columns) for which, n in capacity.items()}, None


class _CacheFull(Exception):
    """A cache file could not take a file's rows (``error`` says why)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _parse_into(splits: dict[str, _SplitRows], path: Path, split: str, variant: str, entry):
    """Parse one file into its split's next slot; return its ``(start, rows)`` and stats.

    A cache file that cannot take the rows (a full disk) is given up for memory, with a warning.
    """
    while True:
        rows = splits[split]

        def allocate(shape, rows=rows):
            if not rows.fits(shape[0]):
                # More lines than rows of this width could fill: short lines the parser will
                # refuse, so that the general reader names them. The array is never used.
                return _new_array(shape)
            try:
                return rows.slot(shape[0])
            except OSError as error:
                if rows.path is None:
                    raise
                raise _CacheFull(error) from error

        try:
            x, stats = read_feature_file(path, variant, allocate)
            return rows.append(x), stats
        except _CacheFull as full:
            log.warning("could not cache the dataset in %s: %s", entry.dir, full.error)
        # Move what the cache files hold so far into memory and go on there.
        for which, old in list(splits.items()):
            moved = _SplitRows(len(old.array), old.n_columns)
            moved.append(old.rows())
            old.close()
            splits[which] = moved
        entry.discard()


def _read_parts(folder: Path, files, variant: str, cache_dir, progress):
    """Read every file (or the folder's current cache entry) into one array per split.

    Returns ``(parts, rows per split, cache stats)``; each part's ``x`` is a view of its rows in
    its file's split.
    """
    columns = columns_of(variant)
    cache = {"dir": str(cache_dir) if cache_dir else None, "hits": 0, "misses": 0}
    entry = _FolderCache(cache_dir, folder, files, variant, len(columns)) if cache_dir else None
    if entry and entry.dir.is_dir():
        entry.remove_abandoned()
    loaded = entry.load() if entry else None
    if loaded is not None:
        rows, file_stats, placements = loaded
        cache["hits"] = len(files)
    else:
        cache["misses"] = len(files) if entry else 0
        rows, file_stats, placements = _parse_files(files, variant, len(columns), entry, progress)
    parts = []
    for (path, class_name, split), stats, (start, length) in zip(
        files, file_stats, placements, strict=True
    ):
        x = rows[split][start : start + length]
        parts.append(_Part(path, class_name, split, x, stats))
    return parts, rows, cache


def _parse_files(files, variant: str, n_columns: int, entry, progress: bool):
    """Parse every file into its split's rows; commit them to the cache entry if there is one."""
    total_bytes = sum(path.stat().st_size for path, _, _ in files)
    splits, entry = _new_splits(files, n_columns, entry)
    file_stats, placements = [], []
    try:
        with tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            desc="reading dataset",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            for path, _, split in files:
                placement, stats = _parse_into(splits, path, split, variant, entry)
                if stats["rows_read"] == 0:
                    log.warning("%s has a header and no rows; it adds nothing", path.name)
                if stats["nan_rows_dropped"]:
                    log.info("%s: dropped %d row(s) with NaN", path.name, stats["nan_rows_dropped"])
                file_stats.append({"file": path.name, **stats})
                placements.append(placement)
                bar.update(path.stat().st_size)
        if entry is not None and all(s.path is not None for s in splits.values()):
            try:
                return entry.commit(splits, file_stats, placements), file_stats, placements
            except OSError as error:
                log.warning("could not cache the dataset in %s: %s", entry.dir, error)
                # The rows are in shared mappings of cache files: copies keep the caller's
                # changes out of them.
                return {w: np.array(s.rows()) for w, s in splits.items()}, file_stats, placements
        return {which: s.rows() for which, s in splits.items()}, file_stats, placements
    finally:
        for rows in splits.values():
            rows.close()  # a mapping still viewed by the result stays until the view goes
        if entry is not None:
            entry.discard()


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's float32 bit patterns.

    A weighted sum of the 32-bit words with fixed random odd 64-bit weights (wrapping), taken in
    row slices that stay in the CPU cache. Equal rows always get equal hashes; callers compare
    rows in full before treating them as equal.
    """
    weights = np.random.default_rng(_HASH_SEED).integers(
        0, np.iinfo(np.int64).max, size=x.shape[1], dtype=np.int64
    ).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    bits = x.view(np.uint32) if x.flags.c_contiguous else np.ascontiguousarray(x).view(np.uint32)
    hashes = np.empty(len(x), dtype=np.uint64)
    for start in range(0, len(x), TRANSPOSE_ROWS):
        block = bits[start : start + TRANSPOSE_ROWS].astype(np.uint64)
        block *= weights
        hashes[start : start + TRANSPOSE_ROWS] = block.sum(axis=1)
    return hashes


def _give_back_pages(x: np.ndarray) -> None:
    """Tell the kernel that the memory pages wholly inside ``x`` will not be read again.

    For rows that live in a mapping (a split's array, a cached file mapped copy-on-write): the
    split arrays hold every class, so dropping references to one class frees nothing. Pages
    shared with the rows before or after ``x`` are kept.
    """
    owner = x
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):  # np.frombuffer keeps the buffer through a memoryview
        owner = owner.obj
    if not isinstance(owner, mmap.mmap) or not x.nbytes or not hasattr(mmap, "MADV_DONTNEED"):
        return
    view = np.frombuffer(owner, dtype=np.uint8)
    offset = x.ctypes.data - view.ctypes.data
    del view
    page = mmap.PAGESIZE
    first = -(-offset // page) * page
    last = (offset + x.nbytes) // page * page
    if last > first:
        owner.madvise(mmap.MADV_DONTNEED, first, last - first)


class _Rows:
    """The rows of several parts seen as one sequence, without concatenating them."""

    def __init__(self, arrays: list[np.ndarray], n_features: int):
        self.arrays = arrays
        self.n_features = n_features
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])
        self._hashes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, index: np.ndarray) -> np.ndarray:
        """Gather rows by global index (any order) into a new array."""
        out = np.empty((len(index), self.n_features), dtype=np.float32)
        owner = np.searchsorted(self.offsets, index, side="right") - 1
        for part in np.unique(owner):
            mask = owner == part
            out[mask] = self.arrays[part][index[mask] - self.offsets[part]]
        return out

    def hashes(self) -> np.ndarray:
        """Row hashes of every row, in order (computed once)."""
        if self._hashes is None:
            pieces = [_row_hashes(a) for a in self.arrays]
            self._hashes = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint64)
        return self._hashes

    def release(self) -> None:
        """Give back the memory of the part arrays: their rows have been copied out."""
        for array in self.arrays:
            _give_back_pages(array)
        self.arrays = []
        self._hashes = None

    def copy_into(self, out: np.ndarray, index: np.ndarray) -> None:
        """Write the rows at sorted global ``index`` into ``out`` (len(out) == len(index))."""
        bounds = np.searchsorted(index, self.offsets)
        for part, array in enumerate(self.arrays):
            start, stop = bounds[part], bounds[part + 1]
            if start == stop:
                continue
            local = index[start:stop] - self.offsets[part]
            if len(local) == len(array):
                out[start:stop] = array
            else:
                out[start:stop] = array[local]


def _same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.all(a.view(np.uint32) == b.view(np.uint32), axis=1)


def _first_occurrences(rows: _Rows, index: np.ndarray) -> np.ndarray:
    """Return the subset of sorted ``index`` whose rows did not occur earlier in ``index``."""
    if len(index) == 0:
        return index
    hashes = rows.hashes()[index]
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    first_of = first[inverse]
    candidates = np.nonzero(first_of != np.arange(len(index)))[0]
    duplicate = np.zeros(len(index), dtype=bool)
    if len(candidates):
        same = _same_rows(rows.take(index[candidates]), rows.take(index[first_of[candidates]]))
        duplicate[candidates[same]] = True
    return index[~duplicate]


def _hash_matches(hashes: np.ndarray, reference_hashes: np.ndarray):
    """Which ``hashes`` occur among ``reference_hashes``, and where (the first such position).

    Returns ``(candidates, positions)``: indexes into ``hashes`` whose hash a reference row has,
    and for each the first reference row with it. Callers compare those rows in full.
    """
    unique, first = np.unique(reference_hashes, return_index=True)
    if len(unique) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    slot = np.minimum(np.searchsorted(unique, hashes), len(unique) - 1)
    candidates = np.nonzero(unique[slot] == hashes)[0]
    return candidates, first[slot[candidates]]


def _not_in(rows: _Rows, index: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return the subset of ``index`` whose rows do not occur among the ``reference`` rows."""
    if len(index) == 0 or len(reference) == 0:
        return index
    all_hashes = rows.hashes()
    candidates, positions = _hash_matches(all_hashes[index], all_hashes[reference])
    present = np.zeros(len(index), dtype=bool)
    if len(candidates):
        same = _same_rows(rows.take(index[candidates]), rows.take(reference[positions]))
        present[candidates[same]] = True
    return index[~present]


def rows_in(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each of ``rows``, whether it occurs bit for bit among the ``reference`` rows.

    Rows are matched by a 64-bit hash and then compared in full, so a row reported present is
    present; one that is only absent would need two distinct reference rows to share a hash.
    """
    rows = np.ascontiguousarray(rows, np.float32)
    reference = np.ascontiguousarray(reference, np.float32)
    found = np.zeros(len(rows), dtype=bool)
    if len(rows) == 0 or len(reference) == 0:
        return found
    candidates, positions = _hash_matches(_row_hashes(rows), _row_hashes(reference))
    if len(candidates):
        found[candidates[_same_rows(rows[candidates], reference[positions])]] = True
    return found


def _stratified_split(n_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n_rows)`` into sorted train and test indexes, ``round(20 %)`` to test."""
    order = rng.permutation(n_rows)
    n_test = int(round(TEST_FRACTION * n_rows))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@dataclass
class _Selection:
    """Which rows of one class go to train and to test (sorted global indexes into its rows)."""

    rows: _Rows
    train: np.ndarray
    test: np.ndarray
    by_seed: bool
    removed: dict


def _select_class_rows(parts: list[_Part], n_features: int, dedupe: bool, rng) -> _Selection:
    """Decide the train and test rows of one class (its parts in train-then-test order)."""
    train_parts = [p for p in parts if p.split == "train"]
    test_parts = [p for p in parts if p.split == "test"]
    rows = _Rows([p.x for p in train_parts + test_parts], n_features)
    n_train = sum(len(p.x) for p in train_parts)
    n_test = sum(len(p.x) for p in test_parts)
    removed = {"train": 0, "test": 0, "test_in_train": 0}
    if n_train and n_test:
        train = np.arange(n_train)
        test = np.arange(n_train, n_train + n_test)
        if dedupe:
            kept_train = _first_occurrences(rows, train)
            kept_test = _first_occurrences(rows, test)
            unseen_test = _not_in(rows, kept_test, kept_train)
            removed = {
                "train": len(train) - len(kept_train),
                "test": len(test) - len(kept_test),
                "test_in_train": len(kept_test) - len(unseen_test),
            }
            train, test = kept_train, unseen_test
        return _Selection(rows, train, test, False, removed)
    pool = np.arange(len(rows))
    if dedupe:
        kept = _first_occurrences(rows, pool)
        # Before the split the pool is one split; count its duplicates under that split's name.
        removed["train" if n_train else "test"] = len(pool) - len(kept)
        pool = kept
    train_pos, test_pos = _stratified_split(len(pool), rng)
    return _Selection(rows, pool[train_pos], pool[test_pos], True, removed)


def _split_description(by_seed: list[str], given: list[str], seed: int) -> str:
    if not by_seed:
        return "dataset files"
    if not given:
        return f"stratified 80/20, seed {seed}"
    return f"dataset files; stratified 80/20, seed {seed} for {len(by_seed)} classes"


def _labels(selections: dict[str, _Selection], label_of: dict) -> dict[str, np.ndarray]:
    """The label of every selected row, per split, classes in the selections' order."""
    return {
        which: np.concatenate(
            [np.zeros(0, dtype=np.int64)]
            + [
                np.full(len(getattr(s, which)), label_of[name], dtype=np.int64)
                for name, s in selections.items()
            ]
        )
        for which in taxonomy.SPLITS
    }


def _assemble(selections: dict[str, _Selection], n_features: int) -> dict[str, np.ndarray]:
    """Copy the selected rows of each split into new arrays, classes in the selections' order."""
    sizes = {
        which: sum(len(getattr(s, which)) for s in selections.values()) for which in taxonomy.SPLITS
    }
    x = {which: np.empty((n, n_features), dtype=np.float32) for which, n in sizes.items()}
    position = dict.fromkeys(taxonomy.SPLITS, 0)
    for selection in selections.values():
        for which in taxonomy.SPLITS:
            index = getattr(selection, which)
            start, stop = position[which], position[which] + len(index)
            selection.rows.copy_into(x[which][start:stop], index)
            position[which] = stop
        selection.rows.release()
    return x


def _summed_inf_counts(parts: list[_Part]) -> dict:
    totals: dict[str, dict[str, int]] = {}
    for part in parts:
        for name, counts in part.stats["inf_values"].items():
            entry = totals.setdefault(name, {"+inf": 0, "-inf": 0})
            entry["+inf"] += counts["+inf"]
            entry["-inf"] += counts["-inf"]
    return totals


def load_dataset(
    folder,
    *,
    view: str = "19",
    dedupe: bool = False,
    seed: int = 0,
    progress: bool = True,
    cache_dir=None,
    use_cache: bool = True,
) -> Dataset:
    """Load a CICIoMT2024 CSV folder into a Dataset (see the module docstring for the rules).

    ``cache_dir`` defaults to ``default_cache_dir()``; the folder's parsed rows are cached there,
    valid while every file keeps its path, size and modification time. ``use_cache=False``
    neither reads nor writes it.
    """
    folder = Path(folder)
    view = taxonomy.check_view(view)
    files = find_dataset_files(folder)
    variants = {path: detect_variant(read_header(path), path.name) for path, _, _ in files}
    variant = check_same_variant(variants)
    columns = columns_of(variant)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    parts, split_rows, cache_stats = _read_parts(
        folder, files, variant, cache if use_cache else None, progress
    )

    by_class: dict[str, list[_Part]] = {}
    for part in parts:
        if len(part.x):
            by_class.setdefault(part.class_name, []).append(part)
    if not by_class:
        raise DataError(
            f"the dataset files in {str(folder)!r} hold no rows",
            hint="every file is header-only or had only NaN rows; restore the dataset files",
        )
    rng = np.random.default_rng(seed)
    selections = {
        name: _select_class_rows(class_parts, len(columns), dedupe, rng)
        for name, class_parts in by_class.items()
    }
    by_seed = [name for name, s in selections.items() if s.by_seed]
    given = [name for name, s in selections.items() if not s.by_seed]
    if by_seed and given:
        log.warning(
            "classes without both _train and _test rows are split 80/20 with seed %d: %s",
            seed,
            ", ".join(by_seed),
        )

    class_names = tuple(taxonomy.labels_in_view(selections, view))
    label_of = {name: class_names.index(taxonomy.view_label(name, view)) for name in selections}
    y = _labels(selections, label_of)
    if dedupe or by_seed:
        x = _assemble(selections, len(columns))
    else:
        # Every class keeps its files' split whole: the rows of the train files, in file order, are
        # x_train (classes in order, as the labels are), and likewise for test; nothing is copied.
        x = split_rows
    x_train, y_train, x_test, y_test = x["train"], y["train"], x["test"], y["test"]

    rows_per_class = {
        which: {name: len(getattr(s, which)) for name, s in selections.items()}
        for which in taxonomy.SPLITS
    }
    rows_per_label = {
        which: {name: int(np.count_nonzero(y == i)) for i, name in enumerate(class_names)}
        for which, y in (("train", y_train), ("test", y_test))
    }
    stats = {
        "folder": str(folder),
        "variant": variant,
        "view": view,
        "files_read": len(parts),
        "bytes_read": sum(p.path.stat().st_size for p in parts),
        "files": [dict(p.stats, **{"class": p.class_name, "split": p.split}) for p in parts],
        "header_only_files": [p.path.name for p in parts if p.stats["rows_read"] == 0],
        "rows_read": sum(p.stats["rows_read"] for p in parts),
        "nan_rows_dropped": sum(p.stats["nan_rows_dropped"] for p in parts),
        "header_rows_skipped": sum(p.stats["header_rows_skipped"] for p in parts),
        "inf_values": _summed_inf_counts(parts),
        "dedupe": dedupe,
        "duplicates_removed": {
            key: sum(s.removed[key] for s in selections.values())
            for key in ("train", "test", "test_in_train")
        },
        "split": _split_description(by_seed, given, seed),
        "seed": seed,
        "classes_split_by_seed": by_seed,
        "rows_per_class": rows_per_class,
        "rows_per_label": rows_per_label,
        "rows": {"train": len(y_train), "test": len(y_test)},
        "cache": cache_stats,
        "synthetic": (folder / SYNTHETIC_MARKER).is_file(),
    }
    del parts, by_class, selections, split_rows
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        feature_names=columns,
        class_names=class_names,
        variant=variant,
        split=stats["split"],
        synthetic=stats["synthetic"],
        view=view,
        stats=stats,
    )
