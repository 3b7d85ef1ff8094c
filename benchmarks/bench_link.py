"""Serial-link throughput: INFER bytes per second against the capacity of a UART at two bauds.

The host-board firmware (fixture engine, so inference costs next to nothing) runs behind the
fault proxy with no faults and a rate limit of baud / 10 bytes per second each way: the pacing
of an 8N1 UART. The harness streams rows one at a time and with its pipelining window, and the
host-to-device bytes per second are compared with the line's capacity.

    python benchmarks/bench_link.py [--seconds 5]
"""

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.devices import HOST_PTY_BUFFER_BYTES
from mcu_ids.flash.host import start_host_device, stop_host_device
from mcu_ids.hil import protocol
from mcu_ids.hil.faults import TO_DEVICE, FaultProxy, baud_bytes_per_s
from mcu_ids.hil.harness import stream_rows
from mcu_ids.resources import asset_dir

REPO = Path(__file__).resolve().parent.parent
TESTS_C = REPO / "tests" / "c"
BAUDS = (115200, 921600)
N_FEATURES = 40


def build_fixture_firmware(folder: Path) -> Path:
    return build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        folder / "mcu-ids-host",
        {"MCU_IDS_RX_BUFFER_BYTES": HOST_PTY_BUFFER_BYTES},
    )


def measure(port: str, baud: int, window: int | None, seconds: float) -> dict:
    """Stream rows for about ``seconds`` through a proxy paced like a UART at ``baud``."""
    capacity = baud_bytes_per_s(baud)
    frame = protocol.HEADER_SIZE + N_FEATURES + protocol.CRC_SIZE
    rows = max(50, int(seconds * capacity / frame))
    inputs = np.random.default_rng(0).integers(-100, 100, (rows, N_FEATURES), dtype=np.int8)
    with FaultProxy(port, bytes_per_s=capacity) as proxy:
        with protocol.open_link(proxy.port, baud) as link:
            hello = link.hello()
            proxy.restart_rate_clock()
            outcomes, stats = stream_rows(link, hello, inputs, window=window)
        achieved = proxy.rate(TO_DEVICE)
    assert all(outcome.result is not None for outcome in outcomes)
    return {
        "baud": baud,
        "window": stats["window"],
        "max_outstanding": stats["max_outstanding"],
        "rows": rows,
        "bytes_per_s": achieved,
        "capacity": capacity,
        "ratio": achieved / capacity,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="streaming time per case")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        device = start_host_device(build_fixture_firmware(Path(tmp)))
        try:
            cases = [
                measure(device.port, baud, window, args.seconds)
                for window in (1, None)
                for baud in BAUDS
            ]
        finally:
            stop_host_device(device)
    print("host -> device INFER bytes per second against the UART capacity (10 bits a byte)")
    print(
        f"{'baud':>8} {'window':>6} {'in flight':>9} {'rows':>6} {'bytes/s':>10} "
        f"{'capacity':>10} {'ratio':>6}"
    )
    for case in cases:
        print(
            f"{case['baud']:>8} {case['window']:>6} {case['max_outstanding']:>9} "
            f"{case['rows']:>6} {case['bytes_per_s']:>10.0f} {case['capacity']:>10.0f} "
            f"{case['ratio']:>6.1%}"
        )


if __name__ == "__main__":
    main()
