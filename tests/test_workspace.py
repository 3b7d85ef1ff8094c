"""A workspace whose files were damaged, or data too small to train on: clear errors."""

import shutil

import numpy as np
import pytest

from mcu_ids.errors import DataError
from mcu_ids.model.train import TrainSettings, train_model, validation_split
from mcu_ids.pipeline import bench_inputs, load_prepared, prepare_data
from mcu_ids.workspace import DamagedArtefactError, MissingStepError, Workspace


@pytest.mark.parametrize("text", ['{"a":', "[1, 2]", "\xff\xfe"], ids=["cut", "list", "binary"])
def test_a_damaged_json_artefact_names_the_step_that_remakes_it(tmp_path, text):
    ws = Workspace(tmp_path)
    ws.data_dir.mkdir()
    ws.dataset_info.write_bytes(text.encode("latin-1"))
    with pytest.raises(DamagedArtefactError) as error:
        ws.read_json(ws.dataset_info, "data")
    assert str(ws.dataset_info) in error.value.message
    assert "run `mcu-ids data` again" in error.value.hint


def test_damaged_arrays_are_named_and_missing_ones_send_to_the_step(tmp_path):
    ws = Workspace(tmp_path)
    ws.data_dir.mkdir()
    with pytest.raises(MissingStepError):
        load_prepared(ws)
    ws.dataset_info.write_text("{}")
    ws.prepared.write_text("these are not arrays")
    with pytest.raises(DamagedArtefactError, match="prepared.npz is damaged"):
        load_prepared(ws)
    np.savez(ws.prepared, x_test=np.arange(3), other=np.zeros(2))
    assert ws.load_arrays(ws.prepared, "data", ["x_test", "absent"]).keys() == {"x_test"}


def test_a_cut_model_file_is_damaged_not_missing(tmp_path, sample_workspace):
    ws = Workspace(tmp_path)
    ws.model_dir.mkdir()
    ws.keras_model.write_bytes(sample_workspace.keras_model.read_bytes()[:1000])
    with pytest.raises(DamagedArtefactError) as error:
        ws.load_keras_model()
    assert "model.keras is damaged" in error.value.message
    assert "mcu-ids train" in error.value.hint
    shutil.copy(sample_workspace.keras_model, ws.keras_model)
    assert ws.load_keras_model().count_params() > 0


def test_every_class_of_two_rows_or_more_gives_one_to_validation():
    labels = np.array([0] * 4 + [1] * 30 + [2])
    fit, val = validation_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [1, 3, 0]
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(len(labels)))


def test_four_training_rows_a_class_train(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 39)).astype(np.float32)
    result = train_model(x, np.array([0, 1] * 4), 2, TrainSettings(epochs=1), progress=False)
    assert result.model.count_params() > 0


def test_data_without_test_rows_is_refused(tmp_path):
    from mcu_ids.data.synthetic import write_synthetic_dataset

    folder = write_synthetic_dataset(tmp_path / "tiny", rows_per_class=10, classes=["Benign"])
    for path in folder.glob("*.csv"):  # keep two rows of each file: 20 % of two rounds to none
        lines = path.read_text().splitlines()
        path.unlink()
        (folder / path.name.replace("_train", "_test")).write_text("\n".join(lines[:3]) + "\n")
    arp = folder / "ARP_Spoofing_test.pcap.csv"
    arp.write_text((folder / "Benign_test.pcap.csv").read_text())
    with pytest.raises(DataError, match="gives no test rows"):
        prepare_data(Workspace(tmp_path / "ws"), folder, progress=False)


def test_scoring_a_folder_counts_the_rows_the_model_was_trained_on(sample_workspace, sample_dir):
    _, arrays = load_prepared(sample_workspace)
    source = bench_inputs(sample_workspace, sample_dir, progress=False)
    # Every row of the sample folder: the training split is among them, bit for bit.
    assert len(source["labels"]) == len(arrays["y_train"]) + len(arrays["y_test"])
    assert source["in_train"].sum() >= len(arrays["y_train"])
    assert source["in_train"].sum() < len(source["labels"])
