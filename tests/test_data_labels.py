"""The CICIoMT2024 label taxonomy and file-name rules."""

import pytest

from mcu_ids.data import labels
from mcu_ids.errors import DataError


def test_taxonomy_has_19_classes_in_6_categories():
    assert len(labels.CLASSES) == 19
    assert len(set(labels.CLASSES)) == 19
    assert labels.CATEGORIES == ("Benign", "Spoofing", "Recon", "MQTT", "DDoS", "DoS")
    per_category = {c: [n for n in labels.CLASSES if labels.category_of(n) == c] for c in
                    labels.CATEGORIES}  # fmt: skip
    assert {c: len(v) for c, v in per_category.items()} == {
        "Benign": 1, "Spoofing": 1, "Recon": 4, "MQTT": 5, "DDoS": 4, "DoS": 4,
    }  # fmt: skip
    assert labels.category_of("TCP_IP-DoS-SYN") == "DoS"
    assert labels.category_of("TCP_IP-DDoS-SYN") == "DDoS"
    assert labels.category_of("MQTT-Malformed_Data") == "MQTT"


def test_views_map_every_class():
    assert [labels.view_label(n, "2") for n in labels.CLASSES].count("Benign") == 1
    assert labels.view_label("ARP_Spoofing", "2") == "Attack"
    assert labels.view_label("Recon-OS_Scan", "6") == "Recon"
    assert labels.view_label("Recon-OS_Scan", "19") == "Recon-OS_Scan"
    assert labels.view_labels("2") == ("Benign", "Attack")
    with pytest.raises(DataError, match="'7'"):
        labels.view_labels("7")


def test_labels_in_view_keep_taxonomy_order():
    present = ["TCP_IP-DoS-UDP", "Benign", "Recon-VulScan", "TCP_IP-DDoS-UDP"]
    assert labels.labels_in_view(present, "19") == [
        "Benign", "Recon-VulScan", "TCP_IP-DDoS-UDP", "TCP_IP-DoS-UDP",
    ]  # fmt: skip
    assert labels.labels_in_view(present, "6") == ["Benign", "Recon", "DDoS", "DoS"]
    assert labels.labels_in_view(["Recon-VulScan"], "2") == ["Attack"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TCP_IP-DDoS-ICMP3_train.pcap.csv", ("TCP_IP-DDoS-ICMP", "train")),
        ("TCP_IP-DDoS-ICMP12_test.pcap.csv", ("TCP_IP-DDoS-ICMP", "test")),
        ("Benign_test.pcap.csv", ("Benign", "test")),
        ("MQTT-DDoS-Connect_Flood_train.pcap.csv", ("MQTT-DDoS-Connect_Flood", "train")),
        ("Recon-Ping_Sweep_test.pcap.csv", ("Recon-Ping_Sweep", "test")),
        ("ARP_Spoofing_train.pcap.csv", ("ARP_Spoofing", "train")),
    ],
)
def test_class_from_filename(name, expected):
    assert labels.class_from_filename(name) == expected


@pytest.mark.parametrize(
    "name",
    ["Benign.csv", "Benign_validation.pcap.csv", "Benign_train.csv", "benign_train.pcap.csv",
     "Ransomware_train.pcap.csv"],
)  # fmt: skip
def test_bad_file_names_are_named_in_the_error(name):
    with pytest.raises(DataError) as error:
        labels.class_from_filename(name)
    assert name in error.value.message
    assert error.value.hint
