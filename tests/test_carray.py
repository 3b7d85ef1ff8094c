"""The model as a C array: byte-exact, aligned, and readable back."""

import shutil
import subprocess

import pytest

from mcu_ids.errors import ModelError
from mcu_ids.export.carray import MODEL_ALIGNMENT, parse_c_array, write_model_array

# Every byte value, and a length that is not a multiple of the row width or the alignment.
SAMPLE = bytes(range(256)) * 3 + b"\x00\xff\x7f"

DUMP_PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include "model_data.h"

int main(void)
{
    if ((uintptr_t)mcu_ids_model % MCU_IDS_MODEL_ALIGNMENT != 0) {
        return 3;
    }
    fwrite(mcu_ids_model, 1, mcu_ids_model_len, stdout);
    return 0;
}
"""


def test_parsed_array_equals_the_model_bytes(tmp_path):
    paths = write_model_array(SAMPLE, tmp_path, "abc123")
    source = (tmp_path / "model_data.c").read_text()
    assert {path.name for path in paths} == {"model_data.c", "model_data.h"}
    assert parse_c_array(source) == SAMPLE
    assert "sha256:abc123" in source.splitlines()[1]


def test_header_has_guard_alignment_and_declarations(tmp_path):
    write_model_array(SAMPLE, tmp_path, "abc123")
    header = (tmp_path / "model_data.h").read_text()
    assert "#ifndef MCU_IDS_MODEL_DATA_H" in header
    assert f"#define MCU_IDS_MODEL_ALIGNMENT {MODEL_ALIGNMENT}" in header
    assert "extern const unsigned char mcu_ids_model[];" in header
    assert "extern const unsigned int mcu_ids_model_len;" in header


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_compiled_array_is_aligned_and_byte_exact(tmp_path):
    write_model_array(SAMPLE, tmp_path, "abc123")
    (tmp_path / "dump.c").write_text(DUMP_PROGRAM)
    exe = tmp_path / "dump"
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Werror", "-I", str(tmp_path), "-o", str(exe),
         str(tmp_path / "dump.c"), str(tmp_path / "model_data.c")],
        check=True,
    )  # fmt: skip
    done = subprocess.run([str(exe)], capture_output=True, check=False)
    assert done.returncode == 0, "the model array is not 16-byte aligned"
    assert done.stdout == SAMPLE


def test_length_mismatch_is_reported(tmp_path):
    write_model_array(SAMPLE, tmp_path, "abc123")
    source = (tmp_path / "model_data.c").read_text()
    tampered = source.replace(f"= {len(SAMPLE)}u;", f"= {len(SAMPLE) + 1}u;")
    with pytest.raises(ModelError, match="says"):
        parse_c_array(tampered)


def test_non_byte_element_is_reported():
    text = "const unsigned char mcu_ids_model[] = { 0x01, 0x100 };"
    with pytest.raises(ModelError, match="256"):
        parse_c_array(text)


def test_empty_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="empty"):
        write_model_array(b"", tmp_path, "abc123")
