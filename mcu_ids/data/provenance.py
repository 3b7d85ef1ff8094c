"""Every row of a dataset folder with its origin: which file it came from and where in that file.

Evaluation protocols that keep whole files or contiguous stretches of a capture on one side of a
split need this; ``load_dataset`` merges files and forgets where rows came from.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcu_ids.data import labels as taxonomy
from mcu_ids.data.reader import (
    check_same_variant,
    find_dataset_files,
    read_feature_file,
    read_header,
)
from mcu_ids.data.schema import columns_of, detect_variant
from mcu_ids.errors import DataError


@dataclass(frozen=True)
class OriginRows:
    """Raw float32 rows in file order, their labels, and the file and position of each row.

    ``row_numbers`` count the data rows a file kept after the reader dropped rows with NaN, so
    neighbouring numbers are neighbouring flows of the capture.
    """

    x: np.ndarray
    y: np.ndarray
    file_ids: np.ndarray
    row_numbers: np.ndarray
    files: tuple[str, ...]
    file_classes: tuple[str, ...]
    file_splits: tuple[str, ...]
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    variant: str


def load_rows_with_origin(folder: Path, view: str = "19") -> OriginRows:
    """Read every dataset file of ``folder`` (no cache, no split) keeping each row's origin."""
    view = taxonomy.check_view(view)
    files = find_dataset_files(Path(folder))
    variants = {path: detect_variant(read_header(path), path.name) for path, _, _ in files}
    variant = check_same_variant(variants)
    arrays, file_ids, row_numbers = [], [], []
    for file_id, (path, _, _) in enumerate(files):
        x, _ = read_feature_file(path, variant)
        arrays.append(np.asarray(x, np.float32))
        file_ids.append(np.full(len(x), file_id, np.int32))
        row_numbers.append(np.arange(len(x), dtype=np.int64))
    if not sum(len(x) for x in arrays):
        raise DataError(
            f"the dataset files in {str(folder)!r} hold no rows",
            hint="every file is header-only or had only NaN rows; restore the dataset files",
        )
    file_classes = tuple(class_name for _, class_name, _ in files)
    class_names = tuple(taxonomy.labels_in_view(set(file_classes), view))
    label_of_file = np.array(
        [class_names.index(taxonomy.view_label(name, view)) for name in file_classes], np.int64
    )
    ids = np.concatenate(file_ids)
    return OriginRows(
        x=np.concatenate(arrays),
        y=label_of_file[ids],
        file_ids=ids,
        row_numbers=np.concatenate(row_numbers),
        files=tuple(path.name for path, _, _ in files),
        file_classes=file_classes,
        file_splits=tuple(split for _, _, split in files),
        class_names=class_names,
        feature_names=tuple(columns_of(variant)),
        variant=variant,
    )
