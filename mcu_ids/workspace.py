"""The working folder where each step leaves its results for the next one."""

import json
from dataclasses import dataclass
from pathlib import Path

from mcu_ids.errors import McuIdsError

DEFAULT_WORKDIR = Path("mcu-ids-out")


class MissingStepError(McuIdsError):
    """A step needs the output of an earlier step that has not been run."""


class DamagedArtefactError(McuIdsError):
    """A step's output exists but cannot be read (cut short, overwritten, edited)."""


@dataclass(frozen=True)
class Workspace:
    """Paths of every artefact, relative to one root folder."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic-data"

    def build_dir(self, board: str) -> Path:
        return self.root / "build" / board

    def device_state(self, board: str) -> Path:
        return self.root / "devices" / f"{board}.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    # Named artefacts
    @property
    def prepared(self) -> Path:
        return self.data_dir / "prepared.npz"

    @property
    def dataset_info(self) -> Path:
        return self.data_dir / "dataset.json"

    @property
    def scaler(self) -> Path:
        return self.data_dir / "scaler.json"

    @property
    def keras_model(self) -> Path:
        return self.model_dir / "model.keras"

    @property
    def training_info(self) -> Path:
        return self.model_dir / "training.json"

    @property
    def tflite_model(self) -> Path:
        return self.model_dir / "model_int8.tflite"

    @property
    def quantization_info(self) -> Path:
        return self.model_dir / "quantization.json"

    @property
    def reference(self) -> Path:
        return self.model_dir / "reference.npz"

    def require(self, path: Path, step: str) -> Path:
        """Return ``path`` if it exists, else say which command makes it."""
        if not path.exists():
            raise MissingStepError(
                f"{path} does not exist",
                hint=f"run `mcu-ids {step}` first (with the same --workdir {self.root})",
            )
        return path

    def damaged(self, path: Path, step: str, problem) -> DamagedArtefactError:
        """The error for an artefact of ``step`` that exists but cannot be read."""
        return DamagedArtefactError(
            f"{path} is damaged and cannot be read ({problem})",
            hint=f"run `mcu-ids {step}` again to remake it (with the same --workdir {self.root})",
        )

    def read_json(self, path: Path, step: str) -> dict:
        """Load a JSON object written by ``step``."""
        try:
            value = json.loads(self.require(path, step).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self.damaged(path, step, error) from error
        if not isinstance(value, dict):
            raise self.damaged(path, step, "it does not hold a JSON object")
        return value

    def load_arrays(self, path: Path, step: str, names=None) -> dict:
        """Load the arrays ``names`` (default: all) of an ``.npz`` written by ``step``.

        A name the file does not hold is left out of the result.
        """
        import zipfile

        import numpy as np

        try:
            with np.load(self.require(path, step), allow_pickle=False) as arrays:
                wanted = arrays.files if names is None else [n for n in names if n in arrays.files]
                return {name: arrays[name] for name in wanted}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise self.damaged(path, step, error) from error

    def load_keras_model(self):
        """The float model `mcu-ids train` saved."""
        import keras

        path = self.require(self.keras_model, "train")
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as error:  # Keras raises many kinds for a damaged archive
            raise self.damaged(path, "train", f"{type(error).__name__}: {error}") from error
