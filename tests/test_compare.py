"""`mcu-ids report compare`: runs side by side, and a clear error for a folder that is not one."""

import json

import pytest

from mcu_ids.cli import main


def made_up_report(board: str, accuracy: float, median_us: float) -> dict:
    return {
        "meta": {"board": board, "engine": "native", "synthetic": False, "model_sha256": "ab" * 32},
        "agreement": {"rows": 10, "identical_outputs_pct": 100.0},
        "device_metrics": {"accuracy": accuracy, "macro_f1": 0.5, "weighted_f1": 0.6},
        "latency": {
            "device": {"us": {"median": median_us, "p99": median_us * 2}, "tick_kind": "ns"}
        },
        "energy": [{"kind": "estimated", "uj_per_inference": 19.8}],
    }


def write_run(folder, report):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return folder


def test_runs_are_put_side_by_side(tmp_path, capsys):
    one = write_run(tmp_path / "run-a", made_up_report("host", 0.91, 6.5))
    two = write_run(tmp_path / "run-b", made_up_report("qemu-f405", 0.93, 130.6))
    html = tmp_path / "cmp.html"
    with pytest.raises(SystemExit) as done:
        main(["report", "compare", str(one), str(two), "--html", str(html)])
        raise SystemExit(0)
    assert done.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | board | engine")
    assert "| run-a | host | native | real | 10 | 100.00 | 0.9100 |" in out[2]
    assert "| 130.60 | 261.20 |" in out[3] and "19.8 (estimated)" in out[3]
    assert "qemu-f405" in html.read_text(encoding="utf-8")


def test_a_folder_that_is_not_a_run_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["report", "compare", str(tmp_path)])
    assert done.value.code == 2
    assert f"{tmp_path} is not a benchmark run" in capsys.readouterr().err


def test_a_run_stopped_early_is_marked(tmp_path, capsys):
    report = made_up_report("qemu-f405", 0.9, 130.0)
    report["meta"].update(complete=False, rows_requested=50, rows_failed=2)
    report["rows"] = 10
    stopped = write_run(tmp_path / "run-stopped", report)
    finished = made_up_report("host", 0.9, 6.0)
    finished["meta"].update(complete=True, rows_failed=0)
    done_run = write_run(tmp_path / "run-done", finished)
    with pytest.raises(SystemExit) as done:
        main(["report", "compare", str(stopped), str(done_run)])
        raise SystemExit(0)
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| complete | rows failed |")
    assert lines[2].startswith("| run-stopped (stopped early) |")
    assert lines[2].endswith("| no: 10 of 50 rows | 2 |")
    assert lines[3].startswith("| run-done |") and lines[3].endswith("| yes | 0 |")


def test_a_measured_energy_is_shown_beside_the_estimate(tmp_path, capsys):
    report = made_up_report("nucleo-f446re", 0.9, 250.0)
    report["energy"] = [
        {"kind": "estimated", "uj_per_inference": 125.0},
        {"kind": "measured", "uj_per_inference": 31.4},
    ]
    run = write_run(tmp_path / "run-measured", report)
    html = tmp_path / "cmp.html"
    with pytest.raises(SystemExit) as done:
        main(["report", "compare", str(run), "--html", str(html)])
        raise SystemExit(0)
    assert done.value.code == 0
    assert "| 31.4 (measured); 125 (estimated) |" in capsys.readouterr().out
    assert "<td>31.4 (measured); 125 (estimated)</td>" in html.read_text(encoding="utf-8")


@pytest.mark.parametrize("content", ["[1, 2]", "{}", '"report"', '{"meta": 3, "agreement": {}}'])
def test_a_report_that_is_not_a_runs_is_named(tmp_path, capsys, content):
    folder = tmp_path / "run-odd"
    folder.mkdir()
    (folder / "report.json").write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        main(["report", "compare", str(folder)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{folder} is not a benchmark run" in err[0]
    assert str(folder / "report.json") in err[0]
