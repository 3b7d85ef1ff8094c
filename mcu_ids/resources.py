"""Where the firmware sources, templates and board files are, installed or in a checkout."""

from pathlib import Path

from mcu_ids.errors import McuIdsError

ASSET_KINDS = ("firmware", "templates", "boards")


def asset_dir(kind: str) -> Path:
    """Return the folder holding one kind of asset (``firmware``, ``templates`` or ``boards``)."""
    if kind not in ASSET_KINDS:
        raise ValueError(f"unknown asset kind {kind!r}")
    package = Path(__file__).resolve().parent
    for candidate in (package / "_assets" / kind, package.parent / kind):
        if candidate.is_dir():
            return candidate
    raise McuIdsError(
        f"the {kind} folder of mcu-ids is missing",
        hint="reinstall the package with `pip install .` from a full checkout",
    )
