"""The working folder where each step leaves its results for the next one."""

import json
from dataclasses import dataclass
from pathlib import Path

from mcu_ids.errors import McuIdsError

DEFAULT_WORKDIR = Path("mcu-ids-out")


class MissingStepError(McuIdsError):
    """A step needs the output of an earlier step that has not been run."""


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

    def read_json(self, path: Path, step: str) -> dict:
        """Load a JSON artefact written by ``step``."""
        return json.loads(self.require(path, step).read_text(encoding="utf-8"))
