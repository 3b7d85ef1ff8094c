"""Headless Chromium for tests that render reports, with the flags this closed network needs."""

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium keeps trying hosts it cannot reach.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_command(profile_dir: Path) -> list[str]:
    """The start of a Chromium command line using ``profile_dir`` as its fresh profile."""
    return [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]
