"""load_dataset: variants, splits, views, NaN/inf accounting, de-duplication and the cache."""

import json
import logging
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcu_ids.data import labels, reader
from mcu_ids.data.reader import load_dataset, read_feature_file
from mcu_ids.data.schema import COLUMNS_39, COLUMNS_45
from mcu_ids.data.synthetic import write_synthetic_dataset

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/ciciomt2024-sample"


def load(folder, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("use_cache", False)
    return load_dataset(folder, **kwargs)


def write_rows(path: Path, columns, rows) -> Path:
    """Write a CSV with the given header and rows (each a sequence of already-formatted values)."""
    lines = [",".join(columns)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def synthetic_39(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("syn39"), rows_per_class=100)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the CICIoMT2024 sample is not present")
def test_real_sample_loads():
    dataset = load(SAMPLE)
    assert dataset.variant == "39"
    assert dataset.feature_names == COLUMNS_39
    assert dataset.class_names == ("Benign", "ARP_Spoofing")
    assert dataset.stats["rows_read"] == 3838
    assert len(dataset.y_train) + len(dataset.y_test) == 3838
    assert dataset.stats["inf_values"] == {"Rate": {"+inf": 2, "-inf": 0}}
    assert np.isposinf(np.concatenate([dataset.x_train, dataset.x_test])[:, 3]).sum() == 2
    assert dataset.split == "stratified 80/20, seed 0"
    assert dataset.stats["rows_per_class"]["test"] == {"Benign": 418, "ARP_Spoofing": 349}
    assert not dataset.synthetic
    json.dumps(dataset.stats)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the CICIoMT2024 sample is not present")
def test_real_sample_values_match_pandas():
    x, stats = read_feature_file(SAMPLE / "ARP_Spoofing_test.pcap.csv", "39")
    expected = pd.read_csv(SAMPLE / "ARP_Spoofing_test.pcap.csv").to_numpy(np.float32)
    np.testing.assert_array_equal(x, expected)
    assert stats["rows_read"] == 1746


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the CICIoMT2024 sample is not present")
def test_real_sample_dedupe_matches_pandas():
    expected = 0
    for path in SAMPLE.glob("*.csv"):
        expected += int(pd.read_csv(path).astype(np.float32).duplicated().sum())
    dataset = load(SAMPLE, dedupe=True)
    assert dataset.stats["duplicates_removed"]["test"] == expected
    assert len(dataset.y_train) + len(dataset.y_test) == 3838 - expected
    rows = np.concatenate([dataset.x_train, dataset.x_test])
    labels_all = np.concatenate([dataset.y_train, dataset.y_test])
    keyed = pd.DataFrame(rows).assign(label=labels_all)
    assert not keyed.duplicated().any()


@pytest.mark.parametrize("variant", ["39", "45"])
def test_both_header_variants_load_with_dataset_split(tmp_path, variant):
    folder = write_synthetic_dataset(tmp_path, rows_per_class=50, variant=variant)
    dataset = load(folder)
    assert dataset.variant == variant
    assert dataset.feature_names == (COLUMNS_39 if variant == "39" else COLUMNS_45)
    assert dataset.class_names == labels.CLASSES
    assert dataset.split == "dataset files"
    assert dataset.synthetic
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int64
    assert dataset.x_train.shape == (19 * 40, len(dataset.feature_names))
    assert dataset.x_test.shape == (19 * 10, len(dataset.feature_names))
    # Numbered train files of one class merge into that class.
    assert len(list(folder.glob("TCP_IP-DDoS-UDP*_train.pcap.csv"))) == 3
    assert dataset.stats["rows_per_class"]["train"]["TCP_IP-DDoS-UDP"] == 40
    assert np.bincount(dataset.y_train).tolist() == [40] * 19


def test_values_and_labels_match_the_files(synthetic_39):
    dataset = load(synthetic_39)
    path = synthetic_39 / "Recon-OS_Scan_test.pcap.csv"
    expected = pd.read_csv(path).to_numpy(np.float32)
    label = dataset.class_names.index("Recon-OS_Scan")
    np.testing.assert_array_equal(dataset.x_test[dataset.y_test == label], expected)


def test_views_6_and_2(synthetic_39):
    full = load(synthetic_39)
    six = load(synthetic_39, view="6")
    two = load(synthetic_39, view="2")
    assert six.class_names == labels.CATEGORIES
    assert two.class_names == ("Benign", "Attack")
    np.testing.assert_array_equal(six.x_train, full.x_train)
    for y_full, y_six, y_two in zip(full.y_train, six.y_train, two.y_train, strict=True):
        name = full.class_names[y_full]
        assert six.class_names[y_six] == labels.category_of(name)
        assert two.class_names[y_two] == ("Benign" if name == "Benign" else "Attack")
    assert six.stats["rows_per_label"]["train"]["Recon"] == 4 * 80


def test_test_only_folder_is_split_80_20_stratified(tmp_path):
    classes = ["Benign", "Recon-VulScan", "TCP_IP-DoS-TCP"]
    folder = write_synthetic_dataset(
        tmp_path, rows_per_class={"Benign": 101, "Recon-VulScan": 37, "TCP_IP-DoS-TCP": 250},
        classes=classes, test_fraction=1.0,
    )  # fmt: skip
    assert not list(folder.glob("*_train.pcap.csv"))
    dataset = load(folder, seed=7)
    assert dataset.split == "stratified 80/20, seed 7"
    assert dataset.stats["rows_per_class"]["test"] == {
        "Benign": 20, "Recon-VulScan": 7, "TCP_IP-DoS-TCP": 50,
    }  # fmt: skip
    assert dataset.stats["rows_per_class"]["train"] == {
        "Benign": 81, "Recon-VulScan": 30, "TCP_IP-DoS-TCP": 200,
    }  # fmt: skip
    again = load(folder, seed=7)
    np.testing.assert_array_equal(again.x_test, dataset.x_test)
    other = load(folder, seed=8)
    assert not np.array_equal(other.x_test, dataset.x_test)
    # Every row lands in exactly one split.
    everything = np.concatenate([dataset.x_train, dataset.x_test])
    as_read = np.concatenate([pd.read_csv(p).to_numpy(np.float32) for p in folder.glob("*.csv")])
    assert sorted(map(bytes, everything)) == sorted(map(bytes, as_read))


def test_folder_with_some_classes_and_a_class_missing_its_test_file(tmp_path):
    classes = ["Benign", "MQTT-Malformed_Data", "TCP_IP-DDoS-SYN"]
    folder = write_synthetic_dataset(tmp_path, rows_per_class=100, classes=classes)
    (folder / "MQTT-Malformed_Data_test.pcap.csv").unlink()
    dataset = load(folder)
    assert dataset.class_names == tuple(classes)
    assert dataset.stats["classes_split_by_seed"] == ["MQTT-Malformed_Data"]
    assert dataset.split == "dataset files; stratified 80/20, seed 0 for 1 classes"
    assert dataset.stats["rows_per_class"]["train"]["MQTT-Malformed_Data"] == 64
    assert dataset.stats["rows_per_class"]["test"]["MQTT-Malformed_Data"] == 16
    assert dataset.stats["rows_per_class"]["test"]["Benign"] == 20


def test_nan_rows_are_dropped_and_counted(tmp_path):
    rows = [[float(i)] * len(COLUMNS_39) for i in range(10)]
    rows[2][5] = "NaN"
    rows[4][0] = ""
    rows[7][38] = "nan"
    write_rows(tmp_path / "Benign_train.pcap.csv", COLUMNS_39, rows)
    write_rows(tmp_path / "Benign_test.pcap.csv", COLUMNS_39, [[1.5] * 39, ["-inf"] + [2] * 38])
    dataset = load(tmp_path)
    assert dataset.stats["nan_rows_dropped"] == 3
    per_file = {f["file"]: f["nan_rows_dropped"] for f in dataset.stats["files"]}
    assert per_file == {"Benign_train.pcap.csv": 3, "Benign_test.pcap.csv": 0}
    assert dataset.x_train[:, 0].tolist() == [0, 1, 3, 5, 6, 8, 9]
    assert dataset.stats["inf_values"] == {"Header_Length": {"+inf": 0, "-inf": 1}}
    assert np.isneginf(dataset.x_test[1, 0])


def test_dedupe_counts_within_and_across_splits(tmp_path):
    row = lambda v: [v] * len(COLUMNS_45)  # noqa: E731
    write_rows(tmp_path / "Benign_train.pcap.csv", COLUMNS_45, [row(1), row(2), row(1), row(1)])
    write_rows(tmp_path / "Benign_test.pcap.csv", COLUMNS_45, [row(3), row(3), row(2), row(4)])
    # The same features in another class are not duplicates of a Benign row.
    write_rows(tmp_path / "ARP_Spoofing_train.pcap.csv", COLUMNS_45, [row(1), row(5)])
    write_rows(tmp_path / "ARP_Spoofing_test.pcap.csv", COLUMNS_45, [row(1), row(6)])
    kept = load(tmp_path)
    assert kept.stats["duplicates_removed"] == {"train": 0, "test": 0, "test_in_train": 0}
    deduped = load(tmp_path, dedupe=True)
    assert deduped.stats["duplicates_removed"] == {"train": 2, "test": 1, "test_in_train": 2}
    benign = deduped.class_names.index("Benign")
    assert deduped.x_train[deduped.y_train == benign, 0].tolist() == [1, 2]
    assert deduped.x_test[deduped.y_test == benign, 0].tolist() == [3, 4]
    assert deduped.x_test[deduped.y_test != benign, 0].tolist() == [6]


def test_cache_is_used_and_refreshed(tmp_path):
    classes = ["Benign", "ARP_Spoofing"]
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=30, classes=classes)
    cache = tmp_path / "cache"
    cold = load(folder, cache_dir=cache, use_cache=True)
    assert cold.stats["cache"]["misses"] == 4 and cold.stats["cache"]["hits"] == 0
    warm = load(folder, cache_dir=cache, use_cache=True)
    assert warm.stats["cache"]["hits"] == 4
    np.testing.assert_array_equal(warm.x_train, cold.x_train)
    np.testing.assert_array_equal(warm.x_test, cold.x_test)
    assert warm.stats["rows_per_class"] == cold.stats["rows_per_class"]
    changed = folder / "Benign_test.pcap.csv"
    header, *rows = changed.read_text().splitlines()
    changed.write_text("\n".join([header, *rows[:-1]]) + "\n")
    refreshed = load(folder, cache_dir=cache, use_cache=True)
    # A changed file makes the folder's entry stale: every file is read again, and the entry's
    # arrays of the old state are replaced, not kept beside the new ones.
    assert refreshed.stats["cache"] == {"dir": str(cache), "hits": 0, "misses": 4}
    assert len(refreshed.y_test) == len(cold.y_test) - 1
    assert sorted(p.suffix for p in cache.iterdir()) == [".f32", ".f32", ".json"]
    again = load(folder, cache_dir=cache, use_cache=True)
    assert again.stats["cache"]["hits"] == 4
    np.testing.assert_array_equal(again.x_test, refreshed.x_test)


def test_changing_loaded_rows_leaves_the_cache_as_it_was(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=20, classes=["Benign"])
    cache = tmp_path / "cache"
    for _ in range(2):  # the load that fills the cache, then one that reads it
        dataset = load(folder, cache_dir=cache, use_cache=True)
        original = dataset.x_train.copy()
        dataset.x_train[:] = -1.0
        dataset.x_test[:] = -1.0
    reloaded = load(folder, cache_dir=cache, use_cache=True)
    assert reloaded.stats["cache"]["hits"] == 2
    np.testing.assert_array_equal(reloaded.x_train, original)
    assert not np.any(reloaded.x_test == -1.0)


def test_split_files_load_without_a_copy_and_equal_the_general_assembly(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=25, seed=4)
    fast = load(folder)
    # With de-duplication on, every selected row is copied into new arrays (the general way);
    # this data has no duplicates, so both must agree row for row.
    general = load(folder, dedupe=True)
    assert general.stats["duplicates_removed"] == {"train": 0, "test": 0, "test_in_train": 0}
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(general, name))
    assert fast.x_train.base is not None and general.x_train.base is None


def test_cache_dir_from_environment(tmp_path, monkeypatch, synthetic_39):
    monkeypatch.setenv("MCU_IDS_CACHE", str(tmp_path / "env-cache"))
    dataset = load_dataset(synthetic_39, progress=False)
    assert dataset.stats["cache"]["dir"] == str(tmp_path / "env-cache")
    assert len(list((tmp_path / "env-cache").glob("*.f32"))) == 2  # train and test rows


def test_rows_copied_out_give_their_pages_back_and_keep_their_neighbours():
    from mcu_ids.data.reader import _give_back_pages, _SplitRows

    split = _SplitRows(4096, 45)
    x = np.random.default_rng(0).random((3000, 45), dtype=np.float32) + 1
    split.append(x)
    part = split.rows()[1000:2000]
    _give_back_pages(part)
    # The pages wholly inside the part are given back (anonymous memory then reads as zeros);
    # rows before and after it, including those sharing its first and last page, are intact.
    np.testing.assert_array_equal(split.rows()[:1000], x[:1000])
    np.testing.assert_array_equal(split.rows()[2000:], x[2000:])
    flat = part.reshape(-1).view(np.uint8)
    page = mmap.PAGESIZE
    first = -(-flat.ctypes.data // page) * page - flat.ctypes.data
    assert 0 < np.count_nonzero(flat == 0) and not flat[first : first + page].any()
    assert np.all(part[0] == x[1000]) and np.all(part[-1] == x[1999])
    _give_back_pages(x)  # rows outside any mapping: nothing to give back, nothing changes
    assert np.all(x >= 1)


def cached(folder, cache):
    return load(folder, cache_dir=cache, use_cache=True)


def entry_files(cache):
    meta = next(cache.glob("*.json"))
    return meta, json.loads(meta.read_text())


def test_rows_of_a_cache_that_could_not_be_committed_are_private(tmp_path, monkeypatch):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=20, classes=["Benign"])
    cache = tmp_path / "cache"
    expected = cached(folder, cache)
    meta, _ = entry_files(cache)
    (folder / "Benign_test.pcap.csv").touch()  # stale: the next load parses and commits again
    real_write = reader.write_atomic

    def failing(path, data):
        if path == meta:
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(reader, "write_atomic", failing)
    dataset = cached(folder, cache)
    monkeypatch.undo()
    dataset.x_train[:] = 7.0  # must not reach any file of the cache
    # The arrays the failed commit had renamed into place are gone, so no stats file names them.
    assert sorted(p.name for p in cache.glob("*.f32")) == sorted(
        a["file"] for a in entry_files(cache)[1]["arrays"].values()
    )
    again = cached(folder, cache)
    np.testing.assert_array_equal(again.x_train, expected.x_train)


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: [],
        lambda m: None,
        lambda m: {**m, "placements": [["a", "b"]] + m["placements"][1:]},
        lambda m: {**m, "placements": [[0, 1, 2]] + m["placements"][1:]},
        lambda m: {**m, "placements": [[0, m["placements"][0][1] + 5]] + m["placements"][1:]},
        lambda m: {**m, "placements": [[-300, 300]] + m["placements"][1:]},
        lambda m: {
            **m,
            "files": [{k: v for k, v in f.items() if k != "inf_values"} for f in m["files"]],
        },
        lambda m: {**m, "files": [dict(f, rows_read="x") for f in m["files"]]},
        lambda m: {**m, "files": m["files"][::-1]},
        lambda m: {**m, "arrays": {"train": m["arrays"]["test"], "test": m["arrays"]["train"]}},
    ],
    ids=[
        "list",
        "null",
        "text-place",
        "three-place",
        "long-place",
        "negative-place",
        "no-infs",
        "text-count",
        "files-swapped",
        "arrays-swapped",
    ],
)
def test_a_damaged_cache_entry_is_ignored_with_a_warning(tmp_path, caplog, damage):
    folder = write_synthetic_dataset(
        tmp_path / "data", rows_per_class=20, classes=["Benign", "ARP_Spoofing"]
    )
    cache = tmp_path / "cache"
    expected = cached(folder, cache)
    meta, entry = entry_files(cache)
    meta.write_text(json.dumps(damage(entry)))
    with caplog.at_level(logging.WARNING):
        dataset = cached(folder, cache)
    assert "ignoring unreadable cache entry" in caplog.text
    assert dataset.stats["cache"]["misses"] == 4
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(dataset, name), getattr(expected, name))
    assert cached(folder, cache).stats["cache"]["hits"] == 4  # the entry was made again


def test_a_folder_whose_name_is_not_utf8_is_cached(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=20, classes=["Benign"])
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/donn\xe9es"))
    folder.rename(odd)
    first = cached(odd, tmp_path / "cache")
    second = cached(odd, tmp_path / "cache")
    assert second.stats["cache"]["hits"] == 2
    np.testing.assert_array_equal(first.x_train, second.x_train)


def test_a_copy_that_keeps_the_modification_time_is_read_again(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=20, classes=["Benign"])
    cache = tmp_path / "cache"
    cached(folder, cache)
    path = folder / "Benign_train.pcap.csv"
    stat = path.stat()
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # same size
    replacement = tmp_path / "replacement.csv"
    replacement.write_text("\n".join(lines) + "\n")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)  # as `cp -p` or `tar x` leave it: same size and time
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    again = cached(folder, cache)
    assert again.stats["cache"]["misses"] == 2
    np.testing.assert_array_equal(again.x_train, load(folder).x_train)


def test_leftovers_of_a_killed_load_go_even_when_the_entry_is_current(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=20, classes=["Benign"])
    cache = tmp_path / "cache"
    cached(folder, cache)
    key = next(cache.glob("*.json")).stem
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    leftover = cache / f".{key}.{ended.pid}.train.abc123"
    leftover.write_bytes(b"\0" * 64)
    assert cached(folder, cache).stats["cache"]["hits"] == 2
    assert not leftover.exists()


def test_rows_in_matches_bit_for_bit_through_repeated_reference_rows():
    from mcu_ids.data.reader import rows_in

    rows = np.random.default_rng(0).random((500, 7), dtype=np.float32)
    other = np.random.default_rng(1).random((40, 7), dtype=np.float32)
    reference = np.concatenate([rows[:200], rows[100:200], other])  # repeats, in any order
    assert rows_in(rows, reference).tolist() == [True] * 200 + [False] * 300
    zero, minus_zero = np.zeros((1, 7), np.float32), np.full((1, 7), -0.0, np.float32)
    assert not rows_in(zero, minus_zero)[0]  # equal as numbers, not bit for bit
    assert rows_in(rows, reference[:0]).tolist() == [False] * 500
    assert rows_in(rows[:0], reference).shape == (0,)
