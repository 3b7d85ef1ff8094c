"""Files are replaced whole: a failure while writing leaves the previous file and no debris."""

import os

import pytest

from mcu_ids import fileio
from mcu_ids.fileio import write_atomic, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = write_atomic(tmp_path / "model_int8.tflite", b"old model")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new model, half written")
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.tflite"]


def test_written_files_are_readable_like_any_other_file(tmp_path):
    path = write_json(tmp_path / "report.json", {"rows": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
