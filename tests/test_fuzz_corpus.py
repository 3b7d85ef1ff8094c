"""Replay the fuzzing corpus through the firmware's parser and handlers under ASan and UBSan.

tests/fuzz/fuzz_app.c is the libFuzzer target; this test links it with a plain main
(tests/fuzz/replay_main.c) instead of libFuzzer, so it needs only gcc and its sanitizers. Each
corpus file is a byte stream sent to the firmware (its first byte sets how the stream is split
into reads); the firmware must not crash, must consume it in bounded time, and every reply it
writes must be a well-formed frame.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from mcu_ids.build.host import build_host_firmware
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

FUZZ_DIR = Path(__file__).parent / "fuzz"
TESTS_C = Path(__file__).parent / "c"
CORPUS = FUZZ_DIR / "corpus"
FIRMWARE_FILES = ("app.c", "protocol.c", "shift.c")
REPLAY_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    firmware = asset_dir("firmware")
    return build_host_firmware(
        [
            FUZZ_DIR / "fuzz_app.c",
            FUZZ_DIR / "platform_fuzz.c",
            FUZZ_DIR / "replay_main.c",
            TESTS_C / "engine_fixture.c",
            *(firmware / name for name in FIRMWARE_FILES),
        ],
        [firmware, TESTS_C, FUZZ_DIR],
        tmp_path_factory.mktemp("fuzz") / "replay",
        sanitize=True,
    )


def corpus_files() -> list[Path]:
    return sorted(path for path in CORPUS.iterdir() if path.is_file())


def test_the_corpus_is_small_and_varied():
    files = corpus_files()
    assert len(files) >= 40
    assert all(path.stat().st_size <= 4096 for path in files)
    assert len({path.read_bytes() for path in files}) == len(files)


def test_every_corpus_file_is_survived_with_well_formed_replies(replay):
    files = corpus_files()
    done = subprocess.run(
        [str(replay), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(files)
    replies = {Path(line.split()[2]).name: int(line.split()[1]) for line in lines}
    # A known frame gets its answer: one reply per request, errors included.
    assert replies["hello_bytewise"] == 1
    assert replies["infer_back_to_back_chunked"] == 6
    assert replies["oversize_length_bytewise"] >= 1
    assert replies["truncated_payload_bytewise"] == 1
    assert replies["swallowed_frame_chunked"] == 2
