"""The CICIoMT2024 label taxonomy: 19 classes, 6 categories, and the benign/attack view.

The class of a row is given by its file name, e.g. ``TCP_IP-DDoS-ICMP3_train.pcap.csv`` holds
class ``TCP_IP-DDoS-ICMP`` of the train split. The order of every list here is fixed, so label
indexes are stable across runs and machines.
"""

import re
from collections.abc import Iterable

from mcu_ids.errors import DataError

# Class -> category, in taxonomy order (category order, then class order within it).
_TAXONOMY = (
    ("Benign", "Benign"),
    ("ARP_Spoofing", "Spoofing"),
    ("Recon-Ping_Sweep", "Recon"),
    ("Recon-VulScan", "Recon"),
    ("Recon-OS_Scan", "Recon"),
    ("Recon-Port_Scan", "Recon"),
    ("MQTT-DDoS-Connect_Flood", "MQTT"),
    ("MQTT-DDoS-Publish_Flood", "MQTT"),
    ("MQTT-DoS-Connect_Flood", "MQTT"),
    ("MQTT-DoS-Publish_Flood", "MQTT"),
    ("MQTT-Malformed_Data", "MQTT"),
    ("TCP_IP-DDoS-ICMP", "DDoS"),
    ("TCP_IP-DDoS-SYN", "DDoS"),
    ("TCP_IP-DDoS-TCP", "DDoS"),
    ("TCP_IP-DDoS-UDP", "DDoS"),
    ("TCP_IP-DoS-ICMP", "DoS"),
    ("TCP_IP-DoS-SYN", "DoS"),
    ("TCP_IP-DoS-TCP", "DoS"),
    ("TCP_IP-DoS-UDP", "DoS"),
)

CLASSES = tuple(name for name, _ in _TAXONOMY)
CATEGORIES = ("Benign", "Spoofing", "Recon", "MQTT", "DDoS", "DoS")
BINARY = ("Benign", "Attack")
VIEWS = {"19": CLASSES, "6": CATEGORIES, "2": BINARY}
SPLITS = ("train", "test")

_CATEGORY = dict(_TAXONOMY)
FILE_PATTERN = "<class>[<n>]_<train|test>.pcap.csv"
_FILE_RE = re.compile(r"^(?P<cls>.+?)(?P<number>\d*)_(?P<split>train|test)(?i:\.pcap\.csv)$")


def class_from_filename(name: str) -> tuple[str, str]:
    """Return ``(class_name, split)`` for a dataset file name such as ``Benign_train.pcap.csv``.

    A trailing number before the split suffix (``TCP_IP-DDoS-ICMP3_train``) is dropped, so the
    numbered files of one class merge.
    """
    match = _FILE_RE.match(name)
    if match is None:
        raise DataError(
            f"file name {name!r} does not follow the dataset layout {FILE_PATTERN}",
            hint="keep the original CICIoMT2024 file names, e.g. TCP_IP-DDoS-ICMP3_train.pcap.csv",
        )
    class_name = match["cls"]
    if class_name not in _CATEGORY:
        raise DataError(
            f"file {name!r} names class {class_name!r}, which is not a CICIoMT2024 class; "
            f"known classes: {', '.join(CLASSES)}",
            hint="keep the original CICIoMT2024 file names",
        )
    return class_name, match["split"]


def check_view(view: str) -> str:
    """Return ``view`` if it is one of "19", "6", "2" (or those numbers), or raise a DataError."""
    view = str(view)
    if view not in VIEWS:
        raise DataError(
            f"unknown label view {view!r}; allowed: {', '.join(VIEWS)}",
            hint="use 19 (every class), 6 (categories) or 2 (benign/attack)",
        )
    return view


def category_of(class_name: str) -> str:
    """Return the category (one of CATEGORIES) of a 19-class label."""
    try:
        return _CATEGORY[class_name]
    except KeyError:
        raise DataError(
            f"unknown class {class_name!r}; known classes: {', '.join(CLASSES)}"
        ) from None


def view_label(class_name: str, view: str) -> str:
    """Return the label that a 19-class label has in a view ("19", "6" or "2")."""
    category = category_of(class_name)
    check_view(view)
    if view == "19":
        return class_name
    if view == "6":
        return category
    return "Benign" if category == "Benign" else "Attack"


def view_labels(view: str) -> tuple[str, ...]:
    """Return every label of a view in taxonomy order."""
    return VIEWS[check_view(view)]


def labels_in_view(class_names: Iterable[str], view: str) -> list[str]:
    """Return the labels of a view that the given 19-class labels map to, in taxonomy order."""
    present = {view_label(name, view) for name in class_names}
    return [label for label in view_labels(view) if label in present]
