"""Board files are data checked on load: each mistake is named with its file and field."""

import pytest

from mcu_ids.build.boards import get_board, load_boards, parse_board
from mcu_ids.cli import main
from mcu_ids.errors import BoardError
from mcu_ids.resources import asset_dir


def board_text(name: str = "nucleo-f446re") -> str:
    return (asset_dir("boards") / f"{name}.toml").read_text(encoding="utf-8")


def write_board(folder, stem: str, text: str):
    path = folder / f"{stem}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_board_loads_with_units_in_its_fields():
    boards = load_boards()
    assert {"esp32", "esp32s3", "nucleo-f446re", "nucleo-l4r5zi", "qemu-f405", "host"} <= set(
        boards
    )
    f446 = boards["nucleo-f446re"]
    assert (f446.clock_hz, f446.flash_kib, f446.ram_kib) == (180_000_000, 512, 128)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("flash_kib = 512", 'flash_kib = "512"', "field 'flash_kib' is '512', expected int"),
        ("flash_kib = 512", "flash_kib = true", "field 'flash_kib' is True, expected int"),
        ("flash_kib = 512", "flash_kib = -4", "field 'flash_kib' must be positive"),
        ('flasher = "pyocd"', 'flasher = "jlink"', "field 'flasher' is 'jlink', allowed:"),
        ("flash_kib = 512\n", "", "missing field 'flash_kib'"),
        ("flash_kib = 512", "flash_kib = 512\nflash = 512", "unknown field(s) flash"),
        ('default_engine = "native"', 'default_engine = "tflm"\nengines = ["native"]', ""),
        ("clock_hz = 180_000_000", "clock_hz = = 1", "is not valid TOML"),
    ],
)
def test_a_wrong_field_is_named_with_its_file(tmp_path, old, new, message):
    text = board_text()
    assert old in text
    broken = text.replace(old, new)
    if 'engines = ["native"]' in new:
        broken = broken.replace('engines = ["native", "tflm"]\n', "")
        message = "default_engine 'tflm' is not in engines"
    path = write_board(tmp_path, "nucleo-f446re", broken)
    with pytest.raises(BoardError) as error:
        parse_board(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_the_name_must_match_the_file(tmp_path):
    path = write_board(tmp_path, "my-board", board_text())
    with pytest.raises(BoardError, match="differs from the file name 'my-board'"):
        parse_board(path)


def test_an_extra_board_folder_adds_and_overrides_boards(tmp_path, monkeypatch):
    text = board_text().replace('name = "nucleo-f446re"', 'name = "my-f446"')
    write_board(tmp_path, "my-f446", text)
    monkeypatch.setenv("MCU_IDS_BOARDS_DIR", str(tmp_path))
    assert get_board("my-f446").chip == "STM32F446RE"
    assert "esp32" in load_boards()


def test_an_extra_board_folder_that_is_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MCU_IDS_BOARDS_DIR", str(tmp_path / "nope"))
    with pytest.raises(BoardError, match="is not a folder"):
        load_boards()


def test_the_board_list_checks_the_toolchain_tables_too(tmp_path, monkeypatch, capsys):
    text = board_text()
    assert "pll_n = 180" in text
    write_board(tmp_path, "nucleo-f446re", text.replace("pll_n = 180", "pll_n = 200"))
    monkeypatch.setenv("MCU_IDS_BOARDS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as done:
        main(["boards"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "pll_n" in err and "clock_hz is 180000000" in err
