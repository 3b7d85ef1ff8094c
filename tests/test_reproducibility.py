"""The same data and seed give the same model hash and byte-identical generated sources."""

import filecmp
import json
import os
import subprocess
import sys

import pytest


def make_model(workdir, data_dir, seed: int):
    env = {**os.environ, "MCU_IDS_CACHE": str(workdir / "cache")}
    for step in (
        ["data", "--data", str(data_dir), "--seed", str(seed)],
        ["train", "--epochs", "2", "--seed", str(seed)],
        ["quantize", "--seed", str(seed)],
        ["export"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "mcu_ids", "-q", "--workdir", str(workdir), *step],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-1500:]
    return json.loads((workdir / "model" / "quantization.json").read_text())["model_sha256"]


@pytest.mark.slow
def test_two_runs_with_one_seed_give_the_same_model_and_sources(tmp_path, sample_dir):
    first = make_model(tmp_path / "a", sample_dir, seed=3)
    second = make_model(tmp_path / "b", sample_dir, seed=3)
    assert first == second
    export_a, export_b = tmp_path / "a" / "export", tmp_path / "b" / "export"
    names = sorted(p.name for p in export_a.iterdir())
    assert "engine_native.c" in names and "model_config.h" in names
    match, mismatch, errors = filecmp.cmpfiles(export_a, export_b, names, shallow=False)
    assert mismatch == [] and errors == []
    assert first in (export_a / "model_config.h").read_text()
