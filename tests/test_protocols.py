"""Evaluation protocols: disjoint splits, contiguous blocks, duplicates removed across the split."""

from pathlib import Path

import numpy as np
import pytest

from mcu_ids.data.provenance import OriginRows, load_rows_with_origin
from mcu_ids.errors import DataError
from mcu_ids.model.protocols import (
    GROUP_BLOCKS,
    drop_cross_duplicates,
    files_split,
    format_protocol_table,
    group_split,
    make_split,
    random_split,
    run_protocols,
)


def origin_rows(files: list[tuple[str, str, int]], n_features: int = 4, seed: int = 0):
    """Distinct random rows for files given as (class, split, rows)."""
    rng = np.random.default_rng(seed)
    classes = tuple(dict.fromkeys(c for c, _, _ in files))
    x, y, file_ids, numbers = [], [], [], []
    for file_id, (class_name, _, n) in enumerate(files):
        x.append(rng.normal(size=(n, n_features)).astype(np.float32))
        y.append(np.full(n, classes.index(class_name)))
        file_ids.append(np.full(n, file_id))
        numbers.append(np.arange(n))
    return OriginRows(
        x=np.concatenate(x),
        y=np.concatenate(y),
        file_ids=np.concatenate(file_ids),
        row_numbers=np.concatenate(numbers),
        files=tuple(f"{c}{i}_{s}.pcap.csv" for i, (c, s, _) in enumerate(files)),
        file_classes=tuple(c for c, _, _ in files),
        file_splits=tuple(s for _, s, _ in files),
        class_names=classes,
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        variant="39",
    )


def test_random_split_is_stratified_and_disjoint():
    rows = origin_rows([("Benign", "test", 500), ("ARP_Spoofing", "test", 101)])
    split = random_split(rows, seed=3)
    assert not set(split.train) & set(split.test)
    assert len(split.train) + len(split.test) == 601
    assert np.bincount(rows.y[split.test]).tolist() == [100, 20]
    assert split.duplicates_removed == 0


def test_duplicates_across_the_boundary_are_removed_and_counted():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    x[7] = x[1]  # test row 7 repeats training row 1
    x[8] = x[2]
    x[9] = x[8]  # two test rows equal to each other and to a training row
    kept, removed = drop_cross_duplicates(x, np.arange(5), np.arange(5, 10))
    assert kept.tolist() == [5, 6]
    assert removed == 3


def test_duplicates_are_removed_whatever_the_label():
    rows = origin_rows([("Benign", "test", 50), ("ARP_Spoofing", "test", 50)])
    x = rows.x.copy()
    x[50:] = x[:50]  # every attack row repeats a benign row
    split = random_split(OriginRows(**{**rows.__dict__, "x": x}), seed=0)
    # Every test row has its twin somewhere; a twin in training removes the test row.
    twins = np.where(split.test < 50, split.test + 50, split.test - 50)
    assert not np.isin(twins, split.train).any()
    assert split.duplicates_removed == 20 - len(split.test)
    assert split.duplicates_removed > 0


def test_group_split_holds_out_one_contiguous_block_per_file():
    rows = origin_rows([("Benign", "test", 103), ("ARP_Spoofing", "test", 57)])
    split = group_split(rows, seed=1)
    for file_id, n in ((0, 103), (1, 57)):
        held = np.sort(rows.row_numbers[split.test][rows.file_ids[split.test] == file_id])
        assert len(held) in (n // GROUP_BLOCKS, n // GROUP_BLOCKS + 1)
        assert np.all(np.diff(held) == 1), "a test block must be one contiguous stretch"
    assert len(split.train) + len(split.test) == 160
    assert not set(split.train) & set(split.test)


def test_group_split_holds_out_whole_files_when_a_class_has_many():
    files = [("Benign", "train", 30)] * 10 + [("ARP_Spoofing", "test", 40)]
    rows = origin_rows(files)
    split = group_split(rows, seed=0)
    benign_test_files = set(rows.file_ids[split.test][rows.y[split.test] == 0].tolist())
    assert len(benign_test_files) == 2
    for file_id in range(10):
        on_test = np.isin(np.flatnonzero(rows.file_ids == file_id), split.test)
        assert on_test.all() or not on_test.any(), f"file {file_id} is split across the boundary"


def test_files_split_uses_the_file_names_or_says_why_not():
    rows = origin_rows(
        [("Benign", "train", 40), ("Benign", "test", 10), ("ARP_Spoofing", "test", 9)]
    )
    split = files_split(rows)
    assert not split.available
    assert split.reason == "ARP_Spoofing has no _train file"
    rows = origin_rows([("Benign", "train", 40), ("Benign", "test", 10)])
    split = files_split(rows)
    assert split.available
    assert rows.file_ids[split.train].tolist() == [0] * 40
    assert rows.file_ids[split.test].tolist() == [1] * 10


def test_unknown_protocol_is_refused():
    with pytest.raises(DataError, match="random, files, group"):
        make_split(origin_rows([("Benign", "test", 10)]), "leaky")


def test_real_sample_origin_and_duplicates(sample_dir: Path):
    rows = load_rows_with_origin(sample_dir)
    assert rows.files == ("Benign_test.pcap.csv", "ARP_Spoofing_test.pcap.csv")
    assert np.bincount(rows.file_ids).tolist() == [2092, 1746]
    assert rows.class_names == ("Benign", "ARP_Spoofing")
    split = random_split(rows, seed=0)
    # The sample repeats rows: a random split puts copies of training rows into the test set.
    assert split.duplicates_removed > 0.25 * (len(split.test) + split.duplicates_removed)
    assert files_split(rows).reason == "ARP_Spoofing has no _train file; Benign has no _train file"


@pytest.mark.slow
def test_every_protocol_on_the_real_sample(sample_dir: Path):
    from mcu_ids.model.train import TrainSettings

    rows = load_rows_with_origin(sample_dir)
    results = run_protocols(
        rows, ("random", "files", "group"), TrainSettings(epochs=3, patience=2), filters=(4, 8)
    )
    assert [r["protocol"] for r in results] == ["random", "files", "group"]
    assert not results[1]["available"]
    for result in (results[0], results[2]):
        assert result["train_rows"] + result["test_rows"] + result["duplicates_removed"] == 3838
        assert 0.0 <= result["macro_f1"] <= 1.0
        assert set(result["recall"]) == {"Benign", "ARP_Spoofing"}
    table = format_protocol_table(results, rows.class_names)
    assert "| files | not available: ARP_Spoofing has no _train file" in table
