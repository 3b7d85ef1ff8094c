"""The synthetic dataset generator: layout, determinism, schema-faithful rows, difficulty."""

import time

import numpy as np
import pytest

from mcu_ids.data import labels
from mcu_ids.data.reader import SYNTHETIC_MARKER, load_dataset
from mcu_ids.data.synthetic import write_synthetic_dataset
from mcu_ids.errors import DataError


def load(folder, **kwargs):
    return load_dataset(folder, progress=False, use_cache=False, **kwargs)


@pytest.fixture(scope="module")
def dataset_45(tmp_path_factory):
    folder = write_synthetic_dataset(tmp_path_factory.mktemp("syn45"), variant="45")
    return load(folder)


def test_layout_and_marker(tmp_path):
    start = time.perf_counter()
    folder = write_synthetic_dataset(tmp_path)
    assert time.perf_counter() - start < 2.0
    names = sorted(p.name for p in folder.glob("*.csv"))
    assert "TCP_IP-DDoS-ICMP1_train.pcap.csv" in names
    assert "TCP_IP-DDoS-ICMP3_train.pcap.csv" in names
    assert "Recon-Ping_Sweep_test.pcap.csv" in names
    for name in names:
        labels.class_from_filename(name)  # every name follows the dataset layout
    assert {labels.class_from_filename(n)[0] for n in names} == set(labels.CLASSES)
    assert "SYNTHETIC" in (folder / SYNTHETIC_MARKER).read_text()
    dataset = load(folder)
    assert dataset.synthetic
    assert dataset.stats["rows"] == {"train": 19 * 320, "test": 19 * 80}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = {"rows_per_class": 120, "classes": ["Benign", "TCP_IP-DDoS-UDP", "Recon-OS_Scan"]}
    first = write_synthetic_dataset(tmp_path / "a", seed=5, **args)
    second = write_synthetic_dataset(tmp_path / "b", seed=5, **args)
    third = write_synthetic_dataset(tmp_path / "c", seed=6, **args)
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "Benign_train.pcap.csv").read_bytes() != (
        third / "Benign_train.pcap.csv"
    ).read_bytes()


def column(dataset, name):
    x = np.concatenate([dataset.x_train, dataset.x_test])
    return x[:, dataset.feature_names.index(name)]


def test_rows_follow_the_schema(dataset_45):
    fractions = [
        "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number",
        "ack_flag_number", "ece_flag_number", "cwr_flag_number", "HTTP", "HTTPS", "DNS",
        "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP", "ICMP", "IGMP", "IPv", "LLC",
    ]  # fmt: skip
    for name in fractions:
        values = column(dataset_45, name)
        assert values.min() >= 0 and values.max() <= 1, name
    for name in ("ack_count", "syn_count", "fin_count", "rst_count", "Tot sum", "Weight"):
        values = column(dataset_45, name)
        assert values.min() >= 0 and np.array_equal(values, np.round(values)), name
    protocol = column(dataset_45, "Protocol Type")
    assert protocol.min() >= 0 and protocol.max() <= 17
    rate, iat = column(dataset_45, "Rate"), column(dataset_45, "IAT")
    finite = np.isfinite(rate)
    assert (~finite).sum() >= 1 and np.all(iat[~finite] == 0)
    np.testing.assert_allclose(rate[finite] * iat[finite], 1.0, rtol=1e-5)
    assert rate[finite].max() / np.median(rate[finite]) > 10  # heavy-tailed
    std, variance = column(dataset_45, "Std"), column(dataset_45, "Variance")
    np.testing.assert_allclose(variance, std.astype(np.float64) ** 2, rtol=1e-4, atol=1e-3)
    low, avg, high = column(dataset_45, "Min"), column(dataset_45, "AVG"), column(dataset_45, "Max")
    assert np.all(low <= avg + 1e-3) and np.all(avg <= high + 1e-3)
    assert low.min() >= 42 and high.max() <= 1514


def test_class_traits(dataset_45):
    x = np.concatenate([dataset_45.x_train, dataset_45.x_test])
    y = np.concatenate([dataset_45.y_train, dataset_45.y_test])

    def mean_of(class_name, feature):
        rows = y == dataset_45.class_names.index(class_name)
        return x[rows, dataset_45.feature_names.index(feature)].mean()

    assert mean_of("TCP_IP-DDoS-SYN", "syn_flag_number") > 0.6
    assert mean_of("Benign", "syn_flag_number") < 0.1
    assert mean_of("TCP_IP-DoS-ICMP", "ICMP") > 0.9
    assert mean_of("TCP_IP-DDoS-UDP", "UDP") > 0.9
    assert mean_of("MQTT-DoS-Publish_Flood", "TCP") > 0.9
    ddos_rate = np.log10(mean_of("TCP_IP-DDoS-TCP", "Rate"))
    assert ddos_rate > np.log10(mean_of("Recon-Port_Scan", "Rate")) + 1


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="'Mirai'"):
        write_synthetic_dataset(tmp_path, classes=["Mirai"])
    with pytest.raises(DataError, match="unknown header variant"):
        write_synthetic_dataset(tmp_path, variant="41")
    with pytest.raises(DataError, match="test_fraction"):
        write_synthetic_dataset(tmp_path, test_fraction=1.5)


@pytest.mark.slow
def test_a_model_learns_it_but_not_perfectly(tmp_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score

    from mcu_ids.data.scaler import FeatureScaler

    dataset = load(write_synthetic_dataset(tmp_path))
    scaler = FeatureScaler().fit(dataset.x_train)
    model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=2)
    model.fit(scaler.transform(dataset.x_train), dataset.y_train)
    predicted = model.predict(scaler.transform(dataset.x_test))
    macro_f1 = f1_score(dataset.y_test, predicted, average="macro")
    assert 0.7 < macro_f1 < 0.95
