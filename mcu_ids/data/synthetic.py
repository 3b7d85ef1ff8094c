"""Write a synthetic dataset in the CICIoMT2024 layout, for tests, demos and benchmarks.

The rows are not network traffic. They are drawn per class from hand-set distributions that keep
the schema's structure: each row summarises a window of packets (``Number``, mostly 10), flag and
protocol columns are fractions of that window, counts are non-negative integers, ``Rate`` is
``1 / IAT`` and heavy-tailed (``inf`` when ``IAT`` is 0), ``Variance`` is ``Std ** 2``, and
``Tot sum`` / ``Min`` / ``Max`` / ``AVG`` / ``Std`` come from the window's packet sizes. Related
classes (DoS and DDoS of one protocol, the four Recon scans, the MQTT floods) share most of their
distribution and a share of each class's rows is drawn from its sibling, so a model cannot
separate them perfectly.
"""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mcu_ids import __version__
from mcu_ids.data import labels as taxonomy
from mcu_ids.data.reader import SYNTHETIC_MARKER
from mcu_ids.data.schema import columns_of
from mcu_ids.errors import DataError

log = logging.getLogger(__name__)

# Rows generated and written at a time: bounds memory for full-size sets.
CHUNK_ROWS = 200_000
WINDOW = 10  # packets summarised by one row, as in the dataset
MIN_PACKET_BYTES = 42
MAX_PACKET_BYTES = 1514
PROTOCOL_NUMBERS = (6.0, 17.0, 1.0, 0.0)  # TCP, UDP, ICMP, ARP (no IP protocol)
TCP_FLAGS = ("fin", "syn", "rst", "psh", "ack", "ece", "cwr")
TCP_APPS = ("HTTP", "HTTPS", "Telnet", "SMTP", "SSH", "IRC")
UDP_APPS = ("DNS", "DHCP")
MAX_TTL_CHOICES = 3
# Classes whose train rows are spread over numbered files, as the largest classes are in the
# dataset; the value is how many files.
NUMBERED_TRAIN_FILES = {
    "TCP_IP-DDoS-ICMP": 3,
    "TCP_IP-DDoS-UDP": 3,
    "TCP_IP-DDoS-SYN": 2,
    "TCP_IP-DDoS-TCP": 2,
    "TCP_IP-DoS-ICMP": 2,
    "TCP_IP-DoS-UDP": 2,
}


@dataclass(frozen=True)
class _Profile:
    """The distribution of one class's rows."""

    protocols: tuple[float, float, float, float]  # TCP, UDP, ICMP, ARP shares of packets
    flags: dict = field(default_factory=dict)  # TCP flag -> probability per TCP packet
    apps: dict = field(default_factory=dict)  # application column -> probability per packet
    log10_rate: tuple[float, float] = (2.0, 0.6)  # mean and spread of log10(packets/s)
    size: tuple[float, float] = (5.5, 0.8)  # mean and spread of log(packet bytes)
    ttls: tuple[tuple[float, float], ...] = ((64.0, 1.0),)  # (TTL, probability)
    tcp_header: tuple[float, float] = (20.0, 32.0)  # header bytes without / with options
    tcp_options: float = 0.3  # probability that a row's TCP packets carry options
    outbound: float = 0.5  # probability that a packet leaves the victim
    inf_rate: float = 0.0  # probability that IAT is 0, so Rate is inf
    short_window: float = 0.05  # probability that a row summarises fewer than WINDOW packets
    sibling: str | None = None  # class whose rows are mixed in
    sibling_share: float = 0.0  # share of rows drawn from the sibling's profile


def _profiles() -> dict[str, _Profile]:
    """The per-class distributions (hand-set to look like the dataset's, not fitted to it)."""
    tcp_flood = _Profile(
        protocols=(0.97, 0.02, 0.01, 0.0),
        flags={"syn": 0.3, "ack": 0.6, "psh": 0.3, "rst": 0.05, "fin": 0.05},
        log10_rate=(3.5, 0.3),
        size=(4.2, 0.3),
        inf_rate=0.002,
        short_window=0.01,
    )
    syn_flood = replace(
        tcp_flood,
        flags={"syn": 0.92, "ack": 0.05, "rst": 0.08},
        log10_rate=(3.7, 0.3),
        size=(4.0, 0.15),
    )
    udp_flood = _Profile(
        protocols=(0.02, 0.97, 0.01, 0.0),
        flags={"ack": 0.5},
        log10_rate=(3.8, 0.3),
        size=(5.0, 0.6),
        inf_rate=0.002,
        short_window=0.01,
    )
    icmp_flood = _Profile(
        protocols=(0.01, 0.01, 0.98, 0.0),
        log10_rate=(3.9, 0.3),
        size=(4.3, 0.4),
        inf_rate=0.003,
        short_window=0.01,
    )
    # Many DDoS sources mean many operating systems; a DoS comes mostly from one machine.
    ddos_ttls = ((64.0, 0.35), (128.0, 0.4), (255.0, 0.25))
    dos_ttls = ((64.0, 0.85), (128.0, 0.1), (255.0, 0.05))
    mqtt = _Profile(
        protocols=(0.96, 0.03, 0.01, 0.0),
        flags={"ack": 0.85, "psh": 0.55, "syn": 0.08, "fin": 0.05},
        log10_rate=(2.4, 0.3),
        size=(4.6, 0.5),
        tcp_options=0.9,
        inf_rate=0.001,
    )
    recon = _Profile(
        protocols=(0.8, 0.12, 0.08, 0.0),
        flags={"syn": 0.5, "ack": 0.3, "rst": 0.3},
        log10_rate=(1.3, 0.7),
        size=(4.3, 0.5),
        ttls=((64.0, 0.8), (128.0, 0.2)),
        short_window=0.3,
    )
    return {
        "Benign": _Profile(
            protocols=(0.6, 0.35, 0.03, 0.02),
            flags={"ack": 0.8, "psh": 0.35, "syn": 0.05, "fin": 0.05, "rst": 0.02},
            apps={"HTTPS": 0.45, "HTTP": 0.1, "DNS": 0.25, "SSH": 0.02, "DHCP": 0.02},
            log10_rate=(1.8, 0.9),
            size=(6.0, 1.0),
            ttls=((64.0, 0.5), (128.0, 0.3), (56.0, 0.2)),
            short_window=0.15,
        ),
        "ARP_Spoofing": _Profile(
            protocols=(0.3, 0.45, 0.05, 0.2),
            flags={"ack": 0.7, "psh": 0.3},
            apps={"HTTPS": 0.2, "DNS": 0.2},
            log10_rate=(2.2, 0.8),
            size=(5.8, 1.0),
            ttls=((64.0, 0.7), (128.0, 0.3)),
            inf_rate=0.001,
            short_window=0.2,
            sibling="Benign",
            sibling_share=0.06,
        ),
        "Recon-Ping_Sweep": replace(
            recon,
            protocols=(0.05, 0.05, 0.9, 0.0),
            log10_rate=(1.0, 0.6),
            sibling="Recon-Port_Scan",
            sibling_share=0.1,
        ),
        "Recon-VulScan": replace(
            recon,
            flags={"syn": 0.3, "ack": 0.6, "psh": 0.35, "rst": 0.15, "fin": 0.1},
            apps={"HTTP": 0.35, "HTTPS": 0.15},
            size=(5.0, 0.7),
            sibling="Recon-OS_Scan",
            sibling_share=0.1,
        ),
        "Recon-OS_Scan": replace(
            recon,
            flags={
                "syn": 0.45,
                "ack": 0.35,
                "rst": 0.3,
                "fin": 0.15,
                "psh": 0.1,
                "ece": 0.15,
                "cwr": 0.1,
            },
            sibling="Recon-Port_Scan",
            sibling_share=0.12,
        ),  # fmt: skip
        "Recon-Port_Scan": replace(
            recon,
            flags={"syn": 0.6, "ack": 0.2, "rst": 0.45},
            log10_rate=(1.6, 0.7),
            sibling="Recon-OS_Scan",
            sibling_share=0.12,
        ),
        "MQTT-DDoS-Connect_Flood": replace(
            mqtt,
            flags={"syn": 0.3, "ack": 0.75, "psh": 0.3, "fin": 0.1, "rst": 0.05},
            log10_rate=(3.1, 0.3),
            ttls=ddos_ttls,
            sibling="MQTT-DoS-Connect_Flood",
            sibling_share=0.1,
        ),
        "MQTT-DDoS-Publish_Flood": replace(
            mqtt,
            log10_rate=(3.1, 0.3),
            size=(4.9, 0.5),
            ttls=ddos_ttls,
            sibling="MQTT-DoS-Publish_Flood",
            sibling_share=0.1,
        ),
        "MQTT-DoS-Connect_Flood": replace(
            mqtt,
            flags={"syn": 0.3, "ack": 0.75, "psh": 0.3, "fin": 0.1, "rst": 0.05},
            ttls=dos_ttls,
            sibling="MQTT-DDoS-Connect_Flood",
            sibling_share=0.1,
        ),
        "MQTT-DoS-Publish_Flood": replace(
            mqtt,
            size=(4.9, 0.5),
            ttls=dos_ttls,
            sibling="MQTT-DDoS-Publish_Flood",
            sibling_share=0.1,
        ),
        "MQTT-Malformed_Data": replace(
            mqtt,
            log10_rate=(1.5, 0.7),
            size=(5.2, 0.9),
            flags={"ack": 0.8, "psh": 0.6, "rst": 0.15, "fin": 0.1},
            short_window=0.3,
        ),
        "TCP_IP-DDoS-ICMP": replace(
            icmp_flood, ttls=ddos_ttls, sibling="TCP_IP-DoS-ICMP", sibling_share=0.06
        ),
        "TCP_IP-DDoS-SYN": replace(
            syn_flood, ttls=ddos_ttls, sibling="TCP_IP-DoS-SYN", sibling_share=0.06
        ),
        "TCP_IP-DDoS-TCP": replace(
            tcp_flood, ttls=ddos_ttls, sibling="TCP_IP-DoS-TCP", sibling_share=0.06
        ),
        "TCP_IP-DDoS-UDP": replace(
            udp_flood, ttls=ddos_ttls, sibling="TCP_IP-DoS-UDP", sibling_share=0.06
        ),
        "TCP_IP-DoS-ICMP": replace(
            icmp_flood,
            log10_rate=(3.3, 0.3),
            ttls=dos_ttls,
            sibling="TCP_IP-DDoS-ICMP",
            sibling_share=0.06,
        ),
        "TCP_IP-DoS-SYN": replace(
            syn_flood,
            log10_rate=(3.1, 0.3),
            ttls=dos_ttls,
            sibling="TCP_IP-DDoS-SYN",
            sibling_share=0.06,
        ),
        "TCP_IP-DoS-TCP": replace(
            tcp_flood,
            log10_rate=(2.9, 0.3),
            ttls=dos_ttls,
            sibling="TCP_IP-DDoS-TCP",
            sibling_share=0.06,
        ),
        "TCP_IP-DoS-UDP": replace(
            udp_flood,
            log10_rate=(3.2, 0.3),
            ttls=dos_ttls,
            sibling="TCP_IP-DDoS-UDP",
            sibling_share=0.06,
        ),
    }


@dataclass(frozen=True)
class _Mix:
    """Which rows of a chunk follow the class's own profile and which its sibling's."""

    own: _Profile
    sibling: _Profile
    from_sibling: np.ndarray  # bool per row


def _mix_rows(rng, n: int, own: _Profile, profiles: dict) -> _Mix:
    """Pick, for each row, its class's profile or (for a share of rows) its sibling's."""
    if own.sibling is None or own.sibling_share <= 0:
        return _Mix(own, own, np.zeros(n, dtype=bool))
    return _Mix(own, profiles[own.sibling], rng.random(n) < own.sibling_share)


def _param(mix: _Mix, getter) -> np.ndarray:
    """Vectorise one profile parameter over the rows (shape (n,) or (n, k))."""
    own = np.asarray(getter(mix.own), dtype=np.float64)
    sibling = np.asarray(getter(mix.sibling), dtype=np.float64)
    mask = mix.from_sibling.reshape(-1, *([1] * own.ndim))
    return np.where(mask, sibling, own)


def _ttl_choices(profile: _Profile) -> list[tuple[float, float]]:
    """The profile's (TTL, probability) pairs padded to MAX_TTL_CHOICES with zero probability."""
    pairs = list(profile.ttls)
    return pairs + [(pairs[0][0], 0.0)] * (MAX_TTL_CHOICES - len(pairs))


def _generate_rows(rng, n: int, class_name: str, profiles: dict) -> dict[str, np.ndarray]:
    """Draw ``n`` rows of one class as a dict of every column of the 45-column variant."""
    chosen = _mix_rows(rng, n, profiles[class_name], profiles)
    number = np.where(
        rng.random(n) < _param(chosen, lambda p: p.short_window),
        rng.integers(3, WINDOW, size=n),
        WINDOW,
    )
    counts = rng.multinomial(number, _param(chosen, lambda p: p.protocols))
    n_tcp, n_udp, n_icmp, n_arp = counts.T
    share = number.astype(np.float64)
    cols: dict[str, np.ndarray] = {}

    with_options = rng.random(n) < _param(chosen, lambda p: p.tcp_options)
    headers = _param(chosen, lambda p: p.tcp_header)
    tcp_header = np.where(with_options, headers[:, 1], headers[:, 0])
    cols["Header_Length"] = np.round((n_tcp * tcp_header + (n_udp + n_icmp) * 8.0) / share, 2)
    cols["Protocol Type"] = np.round(counts @ np.array(PROTOCOL_NUMBERS) / share, 2)

    choices = _param(chosen, _ttl_choices)  # (n, MAX_TTL_CHOICES, 2): TTL, probability
    beyond = rng.random(n)[:, None] > np.cumsum(choices[:, :, 1], axis=1)
    pick = beyond.sum(axis=1).clip(0, MAX_TTL_CHOICES - 1)
    ttl = choices[np.arange(n), pick, 0]
    cols["Time_To_Live"] = ttl
    cols["Duration"] = ttl

    rate_params = _param(chosen, lambda p: p.log10_rate)
    log_rate = rng.normal(rate_params[:, 0], rate_params[:, 1])
    rate = 10.0**log_rate
    zero_gap = rng.random(n) < _param(chosen, lambda p: p.inf_rate)
    cols["IAT"] = np.where(zero_gap, 0.0, 1.0 / rate)
    cols["Rate"] = np.where(zero_gap, np.inf, rate)
    cols["Srate"] = cols["Rate"]
    cols["Drate"] = np.where(rng.random(n) < 0.03, rate * rng.random(n) * 0.01, 0.0)

    for flag in TCP_FLAGS:
        k = rng.binomial(n_tcp, _param(chosen, lambda p, f=flag: p.flags.get(f, 0.0)))
        cols[f"{flag}_flag_number"] = k / share
        if flag in ("ack", "syn", "fin", "rst"):
            cols[f"{flag}_count"] = k + rng.poisson(0.2 * k)
    for app in TCP_APPS:
        cols[app] = rng.binomial(n_tcp, _param(chosen, lambda p, a=app: p.apps.get(a, 0.0))) / share
    for app in UDP_APPS:
        cols[app] = rng.binomial(n_udp, _param(chosen, lambda p, a=app: p.apps.get(a, 0.0))) / share
    cols["TCP"] = n_tcp / share
    cols["UDP"] = n_udp / share
    cols["ICMP"] = n_icmp / share
    cols["ARP"] = n_arp / share
    cols["IGMP"] = np.zeros(n)
    cols["IPv"] = 1.0 - n_arp / share
    cols["LLC"] = np.ones(n)

    _add_size_columns(rng, cols, chosen, number)
    cols["Number"] = number.astype(np.int64)
    return cols


def _add_size_columns(rng, cols: dict, chosen: _Mix, number: np.ndarray) -> None:
    """Draw the window's packet sizes and derive the size statistics from them."""
    n = len(number)
    mean = _param(chosen, lambda p: p.size[0])[:, None]
    spread = _param(chosen, lambda p: p.size[1])[:, None]
    sizes = np.rint(np.exp(rng.normal(mean, spread, size=(n, WINDOW))))
    sizes = sizes.clip(MIN_PACKET_BYTES, MAX_PACKET_BYTES)
    used = np.arange(WINDOW)[None, :] < number[:, None]
    total = np.where(used, sizes, 0.0).sum(axis=1)
    avg = total / number
    std = np.sqrt(np.where(used, (sizes - avg[:, None]) ** 2, 0.0).sum(axis=1) / number)
    cols["Tot sum"] = total.astype(np.int64)
    cols["Min"] = np.where(used, sizes, np.inf).min(axis=1).astype(np.int64)
    cols["Max"] = np.where(used, sizes, 0.0).max(axis=1).astype(np.int64)
    cols["AVG"] = avg
    cols["Std"] = std
    cols["Tot size"] = avg
    cols["Variance"] = std**2

    outbound = (rng.random((n, WINDOW)) < _param(chosen, lambda p: p.outbound)[:, None]) & used
    inbound = ~outbound & used
    n_out = outbound.sum(axis=1)
    n_in = inbound.sum(axis=1)
    mean_out = np.where(outbound, sizes, 0.0).sum(axis=1) / np.maximum(n_out, 1)
    mean_in = np.where(inbound, sizes, 0.0).sum(axis=1) / np.maximum(n_in, 1)
    var_out = np.where(outbound, (sizes - mean_out[:, None]) ** 2, 0.0).sum(axis=1)
    var_in = np.where(inbound, (sizes - mean_in[:, None]) ** 2, 0.0).sum(axis=1)
    var_out /= np.maximum(n_out, 1)
    var_in /= np.maximum(n_in, 1)
    both = (n_out > 0) & (n_in > 0)
    cols["Magnitue"] = np.sqrt(mean_in + mean_out)
    cols["Radius"] = np.sqrt(var_in + var_out)
    cols["Covariance"] = np.where(both, np.sqrt(var_in * var_out) * rng.uniform(-0.3, 0.6, n), 0.0)
    cols["Weight"] = (n_in * n_out).astype(np.int64)


def _file_plan(class_name: str, n_train: int, n_test: int, numbered: bool):
    """Return ``(file_name, split, rows)`` for one class's files."""
    plan = []
    for split, rows in (("train", n_train), ("test", n_test)):
        if rows == 0:
            continue
        pieces = NUMBERED_TRAIN_FILES.get(class_name, 1) if numbered and split == "train" else 1
        if pieces == 1:
            plan.append((f"{class_name}_{split}.pcap.csv", split, rows))
            continue
        bounds = np.linspace(0, rows, pieces + 1).round().astype(int)
        for number in range(pieces):
            piece_rows = int(bounds[number + 1] - bounds[number])
            plan.append((f"{class_name}{number + 1}_{split}.pcap.csv", split, piece_rows))
    return plan


def _write_file(path: Path, columns, rows: int, class_name: str, profiles, seed_key) -> None:
    """Generate and write one CSV file chunk by chunk."""
    schema = pa.schema(
        [(name, pa.int64() if name in _INTEGER_COLUMNS else pa.float64()) for name in columns]
    )
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    tmp = path.with_name(f".{path.name}.partial")
    with pa.OSFile(str(tmp), "wb") as sink:
        sink.write((",".join(columns) + "\n").encode("utf-8"))
        with pacsv.CSVWriter(sink, schema, write_options=options) as writer:
            for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
                rng = np.random.default_rng([*seed_key, chunk])
                generated = _generate_rows(rng, min(CHUNK_ROWS, rows - start), class_name, profiles)
                table = pa.table({name: generated[name] for name in columns}, schema=schema)
                writer.write_table(table)
    tmp.replace(path)


_INTEGER_COLUMNS = frozenset(
    ("Number", "Tot sum", "Min", "Max", "Weight", "ack_count", "syn_count", "fin_count",
     "rst_count")
)  # fmt: skip


def _rows_for(classes: list[str], rows_per_class) -> dict[str, int]:
    if isinstance(rows_per_class, Mapping):
        unknown = sorted(set(rows_per_class) - set(taxonomy.CLASSES))
        if unknown:
            raise DataError(f"rows_per_class names unknown class(es) {unknown}")
        return {name: int(rows_per_class.get(name, 0)) for name in classes}
    return dict.fromkeys(classes, int(rows_per_class))


def _marker_text(rows: dict[str, int], variant: str, seed: int, test_fraction: float) -> str:
    return (
        "SYNTHETIC DATA - not network traffic.\n\n"
        f"Written by mcu-ids {__version__} (mcu_ids.data.synthetic) in the CICIoMT2024 file\n"
        "layout. Each class's rows are drawn from hand-set distributions that keep the schema's\n"
        "structure (flags as fractions of a packet window, Rate = 1 / IAT, Variance = Std^2);\n"
        "related classes overlap on purpose. Use it to exercise the tools, never to report\n"
        "results about intrusion detection.\n\n"
        f"variant: {variant} columns\nseed: {seed}\ntest_fraction: {test_fraction}\n"
        f"rows: {sum(rows.values())} in {sum(1 for r in rows.values() if r)} classes\n"
    )


def write_synthetic_dataset(
    folder,
    *,
    rows_per_class: int | Mapping[str, int] = 400,
    variant: str = "39",
    classes: Iterable[str] | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    numbered_files: bool = True,
) -> Path:
    """Write a synthetic CICIoMT2024-layout folder (CSVs plus a SYNTHETIC.txt marker); return it.

    ``rows_per_class`` is a count for every class or a mapping class -> count. Per class,
    ``round(test_fraction * rows)`` rows go to a ``_test`` file and the rest to ``_train``
    file(s); with ``numbered_files`` the big flood classes spread their train rows over numbered
    files. ``test_fraction`` 0 writes only train files, 1 only test files. The same arguments
    always give byte-identical files.
    """
    columns = columns_of(variant)
    names = list(taxonomy.CLASSES) if classes is None else list(classes)
    for name in names:
        taxonomy.category_of(name)  # raises a DataError for an unknown class
    if not 0.0 <= test_fraction <= 1.0:
        raise DataError(
            f"test_fraction {test_fraction} is outside 0..1", hint="0.2 gives the 80/20 layout"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    profiles = _profiles()
    rows = _rows_for(names, rows_per_class)
    for name in names:
        n_test = int(round(test_fraction * rows[name]))
        class_index = taxonomy.CLASSES.index(name)
        for file_index, (file_name, _, file_rows) in enumerate(
            _file_plan(name, rows[name] - n_test, n_test, numbered_files)
        ):
            seed_key = (seed, class_index, file_index)
            _write_file(folder / file_name, columns, file_rows, name, profiles, seed_key)
            log.debug("wrote %s (%d rows)", file_name, file_rows)
    (folder / SYNTHETIC_MARKER).write_text(_marker_text(rows, variant, seed, test_fraction))
    return folder
