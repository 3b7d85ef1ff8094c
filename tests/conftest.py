"""Shared test options and fixtures."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO.parent / "shared" / "data" / "ciciomt2024-sample"


def pytest_addoption(parser):
    parser.addoption(
        "--port", default=None, help="Serial port of a real board; enables hardware tests."
    )
    parser.addoption(
        "--board", default=None, help="Board name for hardware tests (e.g. esp32, nucleo-f446re)."
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="hardware test: give --port (and --board) to run it")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real CICIoMT2024 sample shipped beside the repository (not part of the project)."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_workspace(tmp_path_factory, sample_dir):
    """A workspace trained, quantized and exported on the real sample (few epochs, for speed)."""
    from mcu_ids.model.train import TrainSettings
    from mcu_ids.pipeline import export, prepare_data, quantize, train
    from mcu_ids.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("sample-ws"))
    prepare_data(ws, sample_dir, progress=False)
    train(ws, TrainSettings(epochs=6, seed=0), (16, 32), progress=False)
    quantize(ws, calibration_rows=500, progress=False)
    export(ws, progress=False)
    return ws
