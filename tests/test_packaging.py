"""A wheel (non-editable install) carries the firmware sources, templates and board files."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("mcu_ids-*.whl"))


def test_wheel_holds_every_asset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("firmware", "templates", "boards"):
        shipped = {
            p.relative_to(REPO / kind).as_posix()
            for p in (REPO / kind).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert shipped, kind
        missing = {f for f in shipped if f"mcu_ids/_assets/{kind}/{f}" not in names}
        assert not missing, f"{kind}: {sorted(missing)[:5]}"


def test_installed_package_finds_its_assets_outside_the_checkout(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = (
        "from mcu_ids.resources import asset_dir; from mcu_ids.build.boards import load_boards;"
        "print(asset_dir('templates')); print(len(load_boards()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    templates, count = done.stdout.split()
    assert Path(templates) == tmp_path / "site" / "mcu_ids" / "_assets" / "templates"
    assert int(count) == len(list((REPO / "boards").glob("*.toml")))
