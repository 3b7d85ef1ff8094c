"""`bench` stopped early: by the user, or by an energy meter that cannot start."""

import logging
import shutil

import pytest

from mcu_ids.devices import bench_device, build_firmware
from mcu_ids.errors import McuIdsError
from mcu_ids.hil import harness


@pytest.fixture(scope="module")
def built(sample_workspace):
    build_firmware(sample_workspace, "host")
    return sample_workspace


def run_dirs(ws) -> set:
    return set(ws.runs_dir.iterdir()) if ws.runs_dir.is_dir() else set()


def test_an_interrupted_bench_says_how_to_finish_the_run(built, monkeypatch, caplog):
    def interrupted(port, inputs, labels, reference, *, out_dir, **options):
        (out_dir / "results.jsonl").write_text("{}\n")  # one row answered, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "run_benchmark", interrupted)
    before = run_dirs(built)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        bench_device(built, "host", "/dev/null", limit=5, progress=False)
    (run,) = run_dirs(built) - before
    assert f"bench --board host --resume {run}" in caplog.text
    shutil.rmtree(run)  # not a run other tests of this workspace should read


def test_an_interrupt_before_any_answer_leaves_no_folder(built, monkeypatch):
    def interrupted(port, inputs, labels, reference, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "run_benchmark", interrupted)
    before = run_dirs(built)
    with pytest.raises(KeyboardInterrupt):
        bench_device(built, "host", "/dev/null", limit=5, progress=False)
    assert run_dirs(built) == before


def test_a_meter_that_cannot_start_leaves_no_run_folder(built, tmp_path):
    before = run_dirs(built)
    with pytest.raises(McuIdsError, match="cannot open the INA bridge"):
        bench_device(
            built,
            "host",
            "/dev/null",
            limit=5,
            progress=False,
            energy_meter=f"ina:{tmp_path / 'no-such-port'}",
            supply_v=3.3,
        )
    assert run_dirs(built) == before
