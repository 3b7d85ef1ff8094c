"""The command line: one-line errors with a hint and an exit code, and the board list."""

import pytest

from mcu_ids.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_boards_lists_every_board_file(capsys):
    code, out, _ = run_cli(capsys, "boards")
    assert code == 0
    for name in ("esp32", "esp32s3", "nucleo-f446re", "nucleo-l4r5zi", "qemu-f405", "host"):
        assert name in out


def test_unknown_board_is_one_line_naming_the_known_ones(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--workdir", str(tmp_path), "build", "--board", "esp8266")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "unknown board 'esp8266'" in lines[0] and "nucleo-f446re" in lines[0]


def test_a_step_without_its_predecessor_says_which_command_to_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--workdir", str(tmp_path), "train")
    assert code == 2
    assert "run `mcu-ids data` first" in err
    assert "Traceback" not in err


def test_missing_data_folder_is_a_clear_error(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "--workdir", str(tmp_path), "data", "--data", str(missing))
    assert code == 2
    assert str(missing) in err


def test_bench_on_an_emulated_board_that_was_not_started(capsys, sample_workspace):
    from mcu_ids.devices import build_firmware

    build_firmware(sample_workspace, "host")
    code, _, err = run_cli(
        capsys, "--workdir", str(sample_workspace.root), "bench", "--board", "host"
    )
    assert code == 2
    assert "mcu-ids flash --board host" in err


def test_run_refuses_a_real_board(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--workdir", str(tmp_path), "run", "--board", "esp32")
    assert code == 2
    assert "real hardware" in err


def test_debug_shows_the_traceback(tmp_path):
    from mcu_ids.errors import BoardError

    with pytest.raises(BoardError):
        main(["--debug", "--workdir", str(tmp_path), "build", "--board", "esp8266"])
