"""The error hierarchy: every failure a user can cause or fix is one of these.

The CLI turns them into one line on stderr and an exit code; tracebacks only with ``--debug``.
"""


class McuIdsError(Exception):
    """Root of every error mcu-ids reports to a user."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class DataError(McuIdsError):
    """The dataset folder, a CSV file or its header cannot be used."""


class ModelError(McuIdsError):
    """A model file is missing, corrupt, or uses something the engine cannot run."""


class BoardError(McuIdsError):
    """A board file is missing or invalid, or the board cannot take the model."""


class BuildError(McuIdsError):
    """Rendering or compiling the firmware failed."""


class FlashError(McuIdsError):
    """The firmware could not be put on, or started on, the board."""


class LinkError(McuIdsError):
    """The serial link to the device failed or the device answered wrongly."""

    exit_code = 3
