"""Firmware for the real boards, built from a model trained on the real sample."""

import json
import shutil
import subprocess

import pytest

from mcu_ids.devices import build_firmware
from mcu_ids.errors import BoardError
from mcu_ids.export.carray import parse_c_array
from mcu_ids.resources import asset_dir

ESP_IDF_FILES = (
    "CMakeLists.txt",
    "sdkconfig.defaults",
    "main/CMakeLists.txt",
    "main/idf_component.yml",
    "main/model_config.h",
)


@pytest.mark.parametrize("engine", ["tflm", "native"])
def test_esp32_project_is_complete_with_a_memory_report(sample_workspace, engine):
    info = build_firmware(sample_workspace, "esp32", engine)
    project = sample_workspace.build_dir("esp32") / "project"
    for name in ESP_IDF_FILES:
        assert (project / name).is_file(), name
    memory = info["memory"]
    assert memory["board"] == "esp32"
    assert memory["flash_budget_bytes"] == 4096 * 1024
    if engine == "tflm":
        array = next(project.rglob("model_data.c")).read_text(encoding="utf-8")
        assert parse_c_array(array) == sample_workspace.tflite_model.read_bytes()
        assert memory["arena_bytes"] == info_arena(sample_workspace)
    recorded = json.loads((sample_workspace.build_dir("esp32") / "build.json").read_text())
    assert recorded["engine"] == engine


def info_arena(ws) -> int:
    manifest = json.loads((ws.export_dir / "manifest.json").read_text())
    return manifest["tflm_arena"]["arena_bytes"]


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="no arm-none-eabi-gcc")
def test_nucleo_native_build_gives_an_elf_whose_size_the_report_uses(sample_workspace):
    info = build_firmware(sample_workspace, "nucleo-f446re", "native")
    elf = info["artifact"]
    header = subprocess.run(
        ["arm-none-eabi-readelf", "-h", elf], capture_output=True, text=True, check=True
    ).stdout
    assert "ARM" in header
    memory = info["memory"]
    assert memory["flash_used_bytes"] == info["flash_bytes"]
    assert memory["ram_used_bytes"] == info["ram_bytes"]
    assert 0 < memory["flash_used_bytes"] < 512 * 1024


def test_a_board_too_small_for_the_model_is_refused_saying_by_how_much(
    sample_workspace, tmp_path, monkeypatch
):
    text = (asset_dir("boards") / "esp32.toml").read_text(encoding="utf-8")
    tiny = text.replace('name = "esp32"', 'name = "tiny-esp32"').replace(
        "ram_kib = 520", "ram_kib = 2"
    )
    (tmp_path / "tiny-esp32.toml").write_text(tiny, encoding="utf-8")
    monkeypatch.setenv("MCU_IDS_BOARDS_DIR", str(tmp_path))
    with pytest.raises(BoardError, match=r"too large by [0-9.]+ KiB"):
        build_firmware(sample_workspace, "tiny-esp32", "tflm")
