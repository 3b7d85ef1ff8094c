"""The two column layouts of the CICIoMT2024 feature CSVs and how to tell them apart."""

from collections.abc import Sequence

from mcu_ids.errors import DataError

COLUMNS_45 = (
    "Header_Length", "Protocol Type", "Duration", "Rate", "Srate", "Drate",
    "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number",
    "ack_flag_number", "ece_flag_number", "cwr_flag_number",
    "ack_count", "syn_count", "fin_count", "rst_count",
    "HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP", "ICMP",
    "IGMP", "IPv", "LLC",
    "Tot sum", "Min", "Max", "AVG", "Std", "Tot size", "IAT", "Number",
    "Magnitue", "Radius", "Covariance", "Variance", "Weight",
)  # fmt: skip

COLUMNS_39 = (
    "Header_Length", "Protocol Type", "Time_To_Live", "Rate",
    "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number",
    "ack_flag_number", "ece_flag_number", "cwr_flag_number",
    "ack_count", "syn_count", "fin_count", "rst_count",
    "HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP", "ICMP",
    "IGMP", "IPv", "LLC",
    "Tot sum", "Min", "Max", "AVG", "Std", "Tot size", "IAT", "Number", "Variance",
)  # fmt: skip

VARIANTS = {"45": COLUMNS_45, "39": COLUMNS_39}


def columns_of(variant: str) -> tuple[str, ...]:
    """Return the column names of a header variant ("45" or "39") in file order."""
    if variant not in VARIANTS:
        raise DataError(
            f"unknown header variant {variant!r}; known variants: {', '.join(VARIANTS)}",
            hint="use '45' (with Duration, Srate, ...) or '39' (with Time_To_Live)",
        )
    return VARIANTS[variant]


def parse_header(line: str) -> list[str]:
    """Split a CSV header line into stripped column names."""
    return [name.strip().strip('"').strip() for name in line.rstrip("\r\n").split(",")]


def detect_variant(header: Sequence[str], source: str = "the header") -> str:
    """Return "45" or "39" for a header given as column names, or raise a DataError.

    Columns may come in any order; names are compared after stripping spaces. ``source`` (usually
    the file name) is named in the error.
    """
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(
            f"{source}: column(s) {', '.join(map(repr, repeated))} appear more than once",
            hint="the file's header line is damaged; restore the file from the dataset archive",
        )
    present = set(names)
    for variant, columns in VARIANTS.items():
        if present == set(columns):
            return variant
    closest = min(VARIANTS, key=lambda v: len(present.symmetric_difference(VARIANTS[v])))
    expected = VARIANTS[closest]
    unexpected = [name for name in names if name not in expected]
    missing = [name for name in expected if name not in present]
    details = []
    if unexpected:
        details.append(f"unexpected column(s) {', '.join(map(repr, unexpected))}")
    if missing:
        details.append(f"missing column(s) {', '.join(map(repr, missing))}")
    raise DataError(
        f"{source}: {len(names)} columns match neither CICIoMT2024 header variant; closest is "
        f"the {closest}-column variant with {' and '.join(details)}",
        hint="mcu-ids reads the 45-column and the 39-column (Time_To_Live) CSV revisions only",
    )
