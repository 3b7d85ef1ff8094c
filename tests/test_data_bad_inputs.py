"""Bad dataset folders and files: each gives a DataError that names what is wrong, or a rule."""

import logging
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.data.reader import load_dataset
from mcu_ids.data.schema import COLUMNS_39, COLUMNS_45, detect_variant
from mcu_ids.errors import DataError

ROW_39 = ",".join(["1.5"] * len(COLUMNS_39))
HEADER_39 = ",".join(COLUMNS_39)


def load(folder, **kwargs):
    return load_dataset(folder, progress=False, use_cache=False, **kwargs)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def good_file(folder: Path, name: str = "Benign_train.pcap.csv", rows: int = 3) -> Path:
    return write(folder / name, HEADER_39 + "\n" + "\n".join([ROW_39] * rows) + "\n")


def test_detect_variant_on_both_headers_in_any_order():
    assert detect_variant(list(COLUMNS_45)) == "45"
    assert detect_variant(list(reversed(COLUMNS_39))) == "39"
    assert detect_variant([f" {name} " for name in COLUMNS_39]) == "39"


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_folder_without_csv_lists_what_it_found(tmp_path):
    write(tmp_path / "notes.txt", "x")
    write(tmp_path / "capture.pcap", "x")
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert "capture.pcap" in error.value.message and "notes.txt" in error.value.message
    assert "_<train|test>.pcap.csv" in error.value.message


@pytest.mark.parametrize("name", ["benign.csv", "Benign_val.pcap.csv", "Mirai_train.pcap.csv"])
def test_wrong_file_name(tmp_path, name):
    good_file(tmp_path)
    good_file(tmp_path, name)
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        load(tmp_path)


def test_empty_file_is_an_error(tmp_path):
    good_file(tmp_path)
    write(tmp_path / "Benign_test.pcap.csv", "")
    with pytest.raises(DataError, match=r"Benign_test\.pcap\.csv: the file is empty"):
        load(tmp_path)


def test_header_only_file_is_read_as_zero_rows_with_a_warning(tmp_path, caplog):
    good_file(tmp_path)
    good_file(tmp_path, "Benign_test.pcap.csv")
    write(tmp_path / "ARP_Spoofing_train.pcap.csv", HEADER_39 + "\n")
    with caplog.at_level(logging.WARNING, logger="mcu_ids.data.reader"):
        dataset = load(tmp_path)
    assert "ARP_Spoofing_train.pcap.csv has a header and no rows" in caplog.text
    assert dataset.stats["header_only_files"] == ["ARP_Spoofing_train.pcap.csv"]
    assert dataset.class_names == ("Benign",)


def test_only_header_only_files_is_an_error(tmp_path):
    write(tmp_path / "Benign_train.pcap.csv", HEADER_39 + "\n")
    with pytest.raises(DataError, match="hold no rows"):
        load(tmp_path)


def test_unknown_column_is_named(tmp_path):
    header = HEADER_39.replace("Time_To_Live", "TTL_guess")
    write(tmp_path / "Benign_train.pcap.csv", header + "\n" + ROW_39 + "\n")
    with pytest.raises(DataError) as error:
        load(tmp_path)
    message = error.value.message
    assert "Benign_train.pcap.csv" in message
    assert "'TTL_guess'" in message and "missing column(s) 'Time_To_Live'" in message


def test_third_variant_is_rejected(tmp_path):
    # The 39 columns plus two of the 45-column ones: neither known revision.
    header = HEADER_39 + ",Magnitue,Weight"
    write(tmp_path / "Benign_train.pcap.csv", header + "\n" + ROW_39 + ",1,2\n")
    with pytest.raises(DataError, match=r"41 columns match neither.*'Magnitue', 'Weight'"):
        load(tmp_path)


def test_files_mixing_variants_are_named(tmp_path):
    good_file(tmp_path)
    row_45 = ",".join(["2"] * len(COLUMNS_45))
    write(tmp_path / "Benign_test.pcap.csv", ",".join(COLUMNS_45) + "\n" + row_45 + "\n")
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert "45 columns: Benign_test.pcap.csv" in error.value.message
    assert "39 columns: Benign_train.pcap.csv" in error.value.message


def test_text_in_a_numeric_column_names_file_line_and_column(tmp_path):
    bad = ROW_39.split(",")
    bad[COLUMNS_39.index("Rate")] = "fast"
    lines = [HEADER_39, ROW_39, ROW_39, ",".join(bad), ROW_39]
    write(tmp_path / "Benign_train.pcap.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert error.value.message == (
        "Benign_train.pcap.csv: line 4, column 'Rate' holds 'fast', which is not a number"
    )


def test_wrong_field_count_names_the_line(tmp_path):
    lines = [HEADER_39, ROW_39, ROW_39 + ",9"]
    write(tmp_path / "Benign_train.pcap.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3 has 40 fields, expected 39"):
        load(tmp_path)


def test_repeated_header_row_is_skipped_and_counted(tmp_path):
    lines = [HEADER_39, ROW_39, HEADER_39, ROW_39.replace("1.5", "2.5"), HEADER_39]
    write(tmp_path / "Benign_train.pcap.csv", "\n".join(lines) + "\n")
    good_file(tmp_path, "Benign_test.pcap.csv", rows=1)
    dataset = load(tmp_path)
    assert dataset.stats["header_rows_skipped"] == 2
    assert dataset.x_train[:, 0].tolist() == [1.5, 2.5]


def test_bad_line_near_the_end_of_a_large_file(tmp_path):
    """A 50 MB file spans many pyarrow blocks; the error still names the exact line."""
    check_bad_line_near_the_end(tmp_path, 50 * 2**20)


@pytest.mark.slow
def test_bad_line_near_the_end_of_a_2_gb_file(tmp_path):
    """The size of a full CICIoMT2024 capture file: the bad line is still found and named."""
    check_bad_line_near_the_end(tmp_path, 2 * 2**30)


def check_bad_line_near_the_end(tmp_path, size_bytes: int) -> None:
    rng = np.random.default_rng(0)
    block = "\n".join(
        ",".join(f"{v:.6f}" for v in row) for row in rng.random((2000, len(COLUMNS_39))) * 1e4
    )
    repeats = size_bytes // len(block) + 1
    path = tmp_path / "TCP_IP-DoS-UDP3_train.pcap.csv"
    with open(path, "w") as handle:
        handle.write(HEADER_39 + "\n")
        for _ in range(repeats):
            handle.write(block + "\n")
        bad = ROW_39.split(",")
        bad[COLUMNS_39.index("IAT")] = "0.00x1"
        handle.write(",".join(bad) + "\n" + ROW_39 + "\n")
    assert path.stat().st_size > size_bytes
    bad_line = 1 + repeats * 2000 + 1
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert error.value.message == (
        f"{path.name}: line {bad_line}, column 'IAT' holds '0.00x1', which is not a number"
    )


def test_lone_carriage_returns_end_lines_as_line_feeds_do(tmp_path):
    rows = [",".join([str(i + 0.5)] * len(COLUMNS_39)) for i in range(4)]
    write(tmp_path / "Benign_train.pcap.csv", "\r".join([HEADER_39, *rows]) + "\r")
    write(tmp_path / "Benign_test.pcap.csv", "\n".join([HEADER_39, *rows]) + "\n")
    dataset = load(tmp_path)
    np.testing.assert_array_equal(dataset.x_train, dataset.x_test)
    assert dataset.x_train[:, 0].tolist() == [0.5, 1.5, 2.5, 3.5]


def test_a_file_without_line_ends_is_named_quickly(tmp_path):
    good_file(tmp_path)
    write(tmp_path / "Benign_test.pcap.csv", ROW_39 * 2000)  # 100+ KB and no line end
    with pytest.raises(DataError, match="Benign_test.pcap.csv: no line end in its first"):
        load(tmp_path)


def test_a_header_without_a_line_end_is_a_header_only_file(tmp_path, caplog):
    good_file(tmp_path)
    write(tmp_path / "Benign_test.pcap.csv", HEADER_39)
    with caplog.at_level(logging.WARNING):
        dataset = load(tmp_path)
    assert dataset.stats["header_only_files"] == ["Benign_test.pcap.csv"]
    assert "has a header and no rows" in caplog.text


def test_a_blank_line_before_the_header_is_named(tmp_path):
    good_file(tmp_path)
    write(tmp_path / "Benign_test.pcap.csv", "\n" + HEADER_39 + "\n" + ROW_39 + "\n")
    with pytest.raises(DataError, match="line 1 is blank"):
        load(tmp_path)


@pytest.mark.parametrize(
    "bad_line, where",
    [
        (" " * 5, "line 4 has 1 fields"),
        ("1", "line 4 has 1 fields"),
        (",".join(["1_000"] + ["1.5"] * (len(COLUMNS_39) - 1)), "line 4, column 'Header_Length'"),
        (",".join([" "] + ["1.5"] * (len(COLUMNS_39) - 1)), "line 4, column 'Header_Length'"),
        (",".join(["\uff11"] + ["1.5"] * (len(COLUMNS_39) - 1)), "line 4, column 'Header_Length'"),
    ],
    ids=["spaces", "short", "underscore", "blank-field", "full-width-digit"],
)
def test_lines_the_parsers_refuse_are_named_by_line(tmp_path, bad_line, where):
    good_file(tmp_path)
    lines = [HEADER_39, ROW_39, ROW_39, bad_line] + ["1"] * 3000  # more short lines than rows fit
    write(tmp_path / "Benign_test.pcap.csv", "\n".join(lines) + "\n")
    assert COLUMNS_39[0] == "Header_Length"
    with pytest.raises(DataError, match=f"Benign_test.pcap.csv: {where}"):
        load(tmp_path)


def test_values_with_spaces_around_them_are_read(tmp_path):
    good_file(tmp_path)
    row = ",".join([" 2.5 ", " nan ", " inf "] + ["1.5"] * (len(COLUMNS_39) - 3))
    write(tmp_path / "Benign_test.pcap.csv", HEADER_39 + "\n" + row + "\n" + ROW_39 + "\n")
    dataset = load(tmp_path)
    assert dataset.stats["nan_rows_dropped"] == 1 and len(dataset.x_test) == 1


def test_a_repeated_header_is_skipped_when_the_first_has_a_byte_order_mark(tmp_path):
    good_file(tmp_path)
    text = "\ufeff" + HEADER_39 + "\n" + ROW_39 + "\n" + HEADER_39 + "\n" + ROW_39 + "\n"
    write(tmp_path / "Benign_test.pcap.csv", text)
    dataset = load(tmp_path)
    assert dataset.stats["header_rows_skipped"] == 1 and len(dataset.x_test) == 2


def test_files_in_linked_folders_and_upper_case_names_are_read(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    good_file(data / "train", "Benign_train.PCAP.CSV")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    good_file(elsewhere, "Benign_test.pcap.csv", rows=2)
    (data / "test").symlink_to(elsewhere)
    (elsewhere / "loop").symlink_to(data)  # a link back up the tree is walked once
    dataset = load(data)
    assert (len(dataset.x_train), len(dataset.x_test)) == (3, 2)


def test_the_same_file_name_twice_is_an_error_naming_both(tmp_path):
    good_file(tmp_path)
    good_file(tmp_path, "Benign_test.pcap.csv")
    (tmp_path / "copy").mkdir()
    good_file(tmp_path / "copy")
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert "Benign_train.pcap.csv and copy/Benign_train.pcap.csv" in error.value.message


def test_macos_metadata_files_are_skipped_and_broken_links_named(tmp_path, caplog):
    good_file(tmp_path)
    good_file(tmp_path, "Benign_test.pcap.csv")
    (tmp_path / "__MACOSX").mkdir()
    write(tmp_path / "__MACOSX" / "._Benign_train.pcap.csv", "\x00\x05\x16\x07")
    write(tmp_path / "._Benign_test.pcap.csv", "\x00\x05\x16\x07")
    with caplog.at_level(logging.WARNING):
        assert len(load(tmp_path).x_train) == 3
    assert "skipped 2 macOS metadata file(s)" in caplog.text
    (tmp_path / "ARP_Spoofing_test.pcap.csv").symlink_to(tmp_path / "gone.csv")
    with pytest.raises(DataError, match="ARP_Spoofing_test.pcap.csv .*does not exist"):
        load(tmp_path)
