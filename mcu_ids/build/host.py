"""Compile the firmware for the host board (a Linux process behind a pseudo-terminal) with gcc."""

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from mcu_ids import __version__
from mcu_ids.errors import BuildError
from mcu_ids.resources import asset_dir

log = logging.getLogger(__name__)

HOST_COMPILER = "gcc"
# -ffp-contract=off keeps float arithmetic identical to the reference (no fused multiply-add).
HOST_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1")
# Shared firmware files the host board links; the engine and model_config.h come from the export.
HOST_FIRMWARE_FILES = ("protocol.c", "app.c", "shift.c", "platform_host.c")
ERROR_LINES_SHOWN = 12


def host_firmware_sources() -> list[Path]:
    """The shared firmware sources of the host board (protocol, main loop, board layer)."""
    folder = asset_dir("firmware")
    return [folder / name for name in HOST_FIRMWARE_FILES]


def _expand_sources(sources: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(source.glob("*.c"))
        elif source.is_file():
            files.append(source)
        else:
            raise BuildError(
                f"firmware source {source} does not exist",
                hint="run the export step first, or check the path",
            )
    if not files:
        raise BuildError("no C sources to compile for the host board")
    return files


def _define_flag(name: str, value) -> str:
    if value is None:
        return f"-D{name}"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'-D{name}="{escaped}"'
    return f"-D{name}={value}"


def _first_errors(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [index for index, line in enumerate(lines) if "error" in line]
    start = errors[0] if errors else 0
    return "\n".join(lines[start : start + ERROR_LINES_SHOWN])


def build_host_firmware(
    sources: Iterable[Path],
    include_dirs: Iterable[Path],
    out_path: Path,
    defines: Mapping[str, object] | None = None,
    *,
    sanitize: bool = False,
    extra_flags: Iterable[str] = (),
) -> Path:
    """Compile and link C ``sources`` (files, or folders of ``*.c``) into ``out_path``.

    String values in ``defines`` become C string literals; ``None`` defines a bare macro.
    ``MCU_IDS_FIRMWARE_VERSION`` defaults to the package version. Raises BuildError with the
    compiler's first error lines on failure.
    """
    compiler = shutil.which(HOST_COMPILER)
    if compiler is None:
        raise BuildError(
            f"the C compiler '{HOST_COMPILER}' is not installed",
            hint="install gcc (Debian/Ubuntu: `apt-get install gcc`)",
        )
    files = _expand_sources(sources)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    all_defines = {"MCU_IDS_FIRMWARE_VERSION": __version__, **(defines or {})}
    command = [compiler, *HOST_CFLAGS]
    if sanitize:
        command += SANITIZE_FLAGS
    command += [*extra_flags]
    command += [f"-I{Path(folder)}" for folder in include_dirs]
    command += [_define_flag(name, value) for name, value in all_defines.items()]
    command += [str(path) for path in files]
    command += ["-o", str(out_path), "-lm"]
    log.debug("compiling: %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(
            f"compiling the host firmware failed (gcc exit code {done.returncode}):\n"
            + _first_errors(done.stderr),
            hint="the first error above names the file and line",
        )
    if done.stderr.strip():
        log.debug("compiler said: %s", done.stderr.strip())
    log.info("built host firmware %s", out_path)
    return out_path
