"""Small file helpers shared by every step: atomic writes and content hashes."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

# What open() asks for before the umask: results are meant to be read by others, like the
# files of any other program; mkstemp alone would leave them readable by the owner only.
NEW_FILE_MODE = 0o666


def process_umask() -> int:
    """The process's file mode creation mask.

    Read from ``/proc/self/status`` where Linux offers it; elsewhere set and restored at once
    (``os.umask`` has no read-only form).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file now."""
    return NEW_FILE_MODE & ~process_umask()


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write a file so that a crash leaves either the old file or the new one, never half of it.

    The file gets the permissions ``open()`` would give it (0o666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content."""
    return sha256_bytes(Path(path).read_bytes())


def save_arrays(path: Path, **arrays) -> Path:
    """Save NumPy arrays as a compressed ``.npz``, atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


class output_to_file:
    """Send file descriptors 1 and 2 to a log file for a block: the TFLite converter prints
    pages of C++ and Python chatter that would bury the tool's own output; the log keeps it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self):
        import sys

        self.path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._log = open(self.path, "ab")  # noqa: SIM115
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(self._log.fileno(), 1)
        os.dup2(self._log.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._log.close()
        return False
