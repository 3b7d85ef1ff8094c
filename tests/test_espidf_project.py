"""The rendered ESP-IDF project: every file idf.py needs, CMake that parses, board values."""

import dataclasses
import logging
import shutil
import subprocess

import pytest
import yaml

from mcu_ids.build.boards import get_board
from mcu_ids.build.espidf import (
    ESP_TFLITE_MICRO_VERSION,
    PROJECT_FILES,
    build_espidf_project,
    render_espidf_project,
)
from mcu_ids.errors import BoardError, BuildError
from mcu_ids.export.carray import write_model_array
from mcu_ids.resources import asset_dir

# Stand-ins for the export step's outputs: the project only copies them, so content is free.
GENERATED = {
    "model_config.h": "#define MCU_IDS_N_FEATURES 24\n#define MCU_IDS_N_CLASSES 6\n",
    "engine_native.c": "/* engine */\n",
    "engine_native.h": "/* engine header */\n",
    "op_resolver.h": "/* resolver */\n",
}

# ESP-IDF's project.cmake is replaced by one that records the project name, and the component
# registration by one that records its arguments, so cmake -P parses the real files.
CMAKE_CHECK = r"""
set(ENV{IDF_PATH} "${FAKE_IDF}")
function(project name)
  message(STATUS "PROJECT=${name}")
endfunction()
include("${PROJECT_DIR}/CMakeLists.txt")
function(idf_component_register)
  cmake_parse_arguments(ARG "" "" "SRCS;INCLUDE_DIRS;REQUIRES" ${ARGN})
  foreach(source IN LISTS ARG_SRCS)
    if(NOT EXISTS "${PROJECT_DIR}/main/${source}")
      message(FATAL_ERROR "missing source ${source}")
    endif()
    message(STATUS "SRC=${source}")
  endforeach()
  foreach(component IN LISTS ARG_REQUIRES)
    message(STATUS "REQUIRES=${component}")
  endforeach()
endfunction()
include("${PROJECT_DIR}/main/CMakeLists.txt")
"""


@pytest.fixture
def generated_dir(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name, text in GENERATED.items():
        (folder / name).write_text(text)
    write_model_array(b"TFL3" * 8, folder, "abc")
    return folder


def _render(board_name, engine, generated_dir, out):
    board = get_board(board_name)
    return render_espidf_project(board, engine, generated_dir, asset_dir("firmware"), out, "abc")


def _cmake_messages(project, tmp_path) -> list[str]:
    fake_idf = tmp_path / "fake-idf"
    (fake_idf / "tools" / "cmake").mkdir(parents=True)
    (fake_idf / "tools" / "cmake" / "project.cmake").write_text("# stands in for ESP-IDF\n")
    script = tmp_path / "check.cmake"
    script.write_text(CMAKE_CHECK)
    done = subprocess.run(
        ["cmake", f"-DPROJECT_DIR={project}", f"-DFAKE_IDF={fake_idf}", "-P", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line.strip("- ").strip() for line in (done.stdout + done.stderr).splitlines()]


@pytest.mark.parametrize("board_name", ["esp32", "esp32s3"])
@pytest.mark.parametrize("engine", ["tflm", "native"])
def test_project_has_every_file_idf_needs(board_name, engine, generated_dir, tmp_path):
    project = _render(board_name, engine, generated_dir, tmp_path / "proj")
    for name in PROJECT_FILES:
        assert (project / name).is_file(), name
    assert (project / "main" / "platform_esp32.c").is_file()
    assert (project / "main" / "app.c").is_file()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_files_parse_and_list_existing_sources(generated_dir, tmp_path):
    project = _render("esp32", "tflm", generated_dir, tmp_path / "proj")
    messages = _cmake_messages(project, tmp_path)
    sources = {m.split("=", 1)[1] for m in messages if m.startswith("SRC=")}
    requires = {m.split("=", 1)[1] for m in messages if m.startswith("REQUIRES=")}
    assert "PROJECT=mcu_ids_esp32_tflm" in messages
    assert sources == {
        "app.c",
        "protocol.c",
        "shift.c",
        "platform_esp32.c",
        "engine_tflm.cc",
        "model_data.c",
    }
    assert requires == {"driver", "espressif__esp-tflite-micro"}


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_native_engine_needs_no_tflm_component(generated_dir, tmp_path):
    project = _render("esp32", "native", generated_dir, tmp_path / "proj")
    messages = _cmake_messages(project, tmp_path)
    sources = {m.split("=", 1)[1] for m in messages if m.startswith("SRC=")}
    assert "engine_native.c" in sources and "engine_tflm.cc" not in sources
    manifest = yaml.safe_load((project / "main" / "idf_component.yml").read_text())
    assert "espressif/esp-tflite-micro" not in manifest["dependencies"]


def test_component_manifest_pins_tflm(generated_dir, tmp_path):
    project = _render("esp32", "tflm", generated_dir, tmp_path / "proj")
    manifest = yaml.safe_load((project / "main" / "idf_component.yml").read_text())
    pinned = manifest["dependencies"]["espressif/esp-tflite-micro"]["version"]
    assert pinned == ESP_TFLITE_MICRO_VERSION
    assert "<" in pinned and ">=" in pinned


def test_sdkconfig_follows_the_board(generated_dir, tmp_path):
    board = get_board("esp32s3")
    project = _render("esp32s3", "tflm", generated_dir, tmp_path / "proj")
    lines = (project / "sdkconfig.defaults").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert settings["CONFIG_IDF_TARGET"] == '"esp32s3"'
    assert settings[f"CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_{board.clock_hz // 1_000_000}"] == "y"
    assert settings["CONFIG_ESP_CONSOLE_UART_BAUDRATE"] == str(board.baud)
    assert settings[f"CONFIG_ESPTOOLPY_FLASHSIZE_{board.flash_kib // 1024}MB"] == "y"
    assert settings["CONFIG_UART_ISR_IN_IRAM"] == "y"
    assert int(settings["CONFIG_ESP_MAIN_TASK_STACK_SIZE"]) >= 4096
    header = (project / "main" / "esp32_board.h").read_text()
    threshold = board.section("esp32")["rx_full_threshold_bytes"]
    assert f"#define MCU_IDS_UART_RX_FULL_THRESHOLD {threshold}" in header


def test_unsupported_clock_is_a_board_error(generated_dir, tmp_path):
    board = dataclasses.replace(get_board("esp32"), clock_hz=200_000_000)
    with pytest.raises(BoardError, match="200000000"):
        render_espidf_project(board, "tflm", generated_dir, asset_dir("firmware"), tmp_path, "a")


def test_missing_export_is_a_build_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match="model_config.h"):
        _render("esp32", "tflm", empty, tmp_path / "proj")


def test_build_without_idf_says_how(generated_dir, tmp_path, monkeypatch, caplog):
    project = _render("esp32", "tflm", generated_dir, tmp_path / "proj")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with caplog.at_level(logging.WARNING):
        assert build_espidf_project(project) is None
    assert "idf.py set-target esp32 && idf.py build" in caplog.text
