"""Evaluation protocols: how rows are split into training and test rows, and what that hides.

Three protocols, each named in every report:

- ``random``: per class, a seeded 20 % of the rows go to test (stratified 80/20). Flows of one
  capture land on both sides, so this measures how well the model recognises the captures it has
  seen, not new traffic.
- ``files``: the dataset's own ``_train`` files train and its ``_test`` files test. Not available
  when a class lacks one of the two kinds of file (the reason is reported).
- ``group``: whole stretches of a capture stay on one side. Per class, when the class has at least
  ``GROUP_BLOCKS`` files, a seeded ``round(0.2 * files)`` whole files (at least one) go to test.
  Otherwise every file of the class is cut, in row order, into ``GROUP_BLOCKS`` contiguous blocks
  of near-equal size and one block per file, drawn with the seed, goes to test. The dataset's
  train/test file naming is ignored: all files are pooled first.

In every protocol, a test row whose features are bitwise identical (as float32) to any training
row, whatever its label, is removed and counted: the dataset repeats 37-45 % of its rows, and a
repeated row on both sides is a question the model has already seen the answer to.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcu_ids.data.provenance import OriginRows
from mcu_ids.errors import DataError
from mcu_ids.fileio import write_atomic, write_json
from mcu_ids.model.network import DEFAULT_FILTERS

log = logging.getLogger(__name__)

PROTOCOLS = ("random", "files", "group")
TEST_FRACTION = 0.2
GROUP_BLOCKS = 5
# Fewer than the main chain's 40: three trainings in one command, early stopping still applies.
DEFAULT_EPOCHS = 20
EVALUATION_DIR = "evaluation"

RULES = {
    "random": f"per class, a seeded {TEST_FRACTION:.0%} of rows to test",
    "files": "the dataset's _train files train, its _test files test",
    "group": (
        f"per class: whole files to test when the class has >= {GROUP_BLOCKS} files, else each "
        f"file cut into {GROUP_BLOCKS} contiguous blocks with one seeded block per file to test"
    ),
}
DEDUPE_RULE = "test rows bitwise identical to any training row removed"


@dataclass(frozen=True)
class Split:
    """Training and test row indices of one protocol, or the reason it cannot be applied."""

    protocol: str
    train: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    duplicates_removed: int = 0
    reason: str = ""

    @property
    def available(self) -> bool:
        return not self.reason

    @property
    def rule(self) -> str:
        return RULES[self.protocol]


def _row_keys(x: np.ndarray) -> np.ndarray:
    """One opaque value per row, equal exactly when the rows are bitwise equal."""
    rows = np.ascontiguousarray(x)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def drop_cross_duplicates(x: np.ndarray, train: np.ndarray, test: np.ndarray):
    """Test indices without the rows that also occur in training, and how many were dropped."""
    if len(train) == 0 or len(test) == 0:
        return test, 0
    seen = np.isin(_row_keys(x[test]), _row_keys(x[train]))
    return test[~seen], int(np.count_nonzero(seen))


def _finish(protocol: str, rows: OriginRows, train: list, test: list) -> Split:
    train_idx = np.sort(np.concatenate(train)).astype(np.int64)
    test_idx = np.sort(np.concatenate(test)).astype(np.int64)
    kept, removed = drop_cross_duplicates(rows.x, train_idx, test_idx)
    return Split(protocol, train_idx, kept, removed)


def random_split(rows: OriginRows, seed: int = 0) -> Split:
    """Stratified 80/20: per class, ``round(0.2 * rows)`` seeded rows go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(rows.y):
        members = rng.permutation(np.flatnonzero(rows.y == label))
        n_test = int(round(TEST_FRACTION * len(members))) if len(members) > 1 else 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    return _finish("random", rows, train, test)


def files_split(rows: OriginRows) -> Split:
    """The dataset's own split by file name, if every class has both kinds of file."""
    pairs = set(zip(rows.file_classes, rows.file_splits, strict=True))
    missing = [
        f"{class_name} has no _{split} file"
        for class_name in sorted(set(rows.file_classes))
        for split in ("train", "test")
        if (class_name, split) not in pairs
    ]
    if missing:
        return Split("files", reason="; ".join(missing))
    is_test_file = np.array([split == "test" for split in rows.file_splits])
    on_test = is_test_file[rows.file_ids]
    return _finish("files", rows, [np.flatnonzero(~on_test)], [np.flatnonzero(on_test)])


def group_split(rows: OriginRows, seed: int = 0, blocks: int = GROUP_BLOCKS) -> Split:
    """Whole files, or contiguous blocks of each file, on one side (module docstring rule)."""
    if blocks < 2:
        raise DataError(f"group split needs at least 2 blocks, got {blocks}", hint="use 5")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for class_name in dict.fromkeys(rows.file_classes):
        file_ids = [i for i, c in enumerate(rows.file_classes) if c == class_name]
        file_ids = [i for i in file_ids if np.any(rows.file_ids == i)]
        if len(file_ids) >= blocks:
            n_test = max(1, int(round(TEST_FRACTION * len(file_ids))))
            held_out = set(rng.choice(file_ids, size=n_test, replace=False).tolist())
            for file_id in file_ids:
                members = np.flatnonzero(rows.file_ids == file_id)
                (test if file_id in held_out else train).append(members)
            continue
        for file_id in file_ids:
            members = np.flatnonzero(rows.file_ids == file_id)
            ordered = members[np.argsort(rows.row_numbers[members], kind="stable")]
            pieces = np.array_split(ordered, blocks)
            chosen = int(rng.integers(blocks))
            test.append(pieces[chosen])
            train.extend(piece for index, piece in enumerate(pieces) if index != chosen)
    return _finish("group", rows, train, test)


def make_split(rows: OriginRows, protocol: str, seed: int = 0) -> Split:
    """The split of ``rows`` under a protocol named in ``PROTOCOLS``."""
    if protocol == "random":
        return random_split(rows, seed)
    if protocol == "files":
        return files_split(rows)
    if protocol == "group":
        return group_split(rows, seed)
    raise DataError(
        f"unknown evaluation protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}, all",
        hint="use --protocol all to compare them",
    )


def protocol_names(choice: str) -> tuple[str, ...]:
    """The protocols that ``--protocol`` names ("all" means every one)."""
    if choice == "all":
        return PROTOCOLS
    if choice not in PROTOCOLS:
        raise DataError(
            f"unknown evaluation protocol {choice!r}; allowed: {', '.join(PROTOCOLS)}, all",
            hint="use --protocol all to compare them",
        )
    return (choice,)


def evaluate_split(
    rows: OriginRows, split: Split, settings, filters: tuple[int, ...], progress: bool = False
) -> dict:
    """Fit the scaler and train the network on the split's training rows; score its test rows."""
    from mcu_ids.data.scaler import FeatureScaler
    from mcu_ids.model.evaluate import classification_metrics
    from mcu_ids.model.train import predict_classes, train_model

    summary = {
        "protocol": split.protocol,
        "rule": split.rule,
        "available": split.available,
        "reason": split.reason,
    }
    if not split.available:
        return summary
    missing = sorted(set(np.unique(rows.y[split.test])) - set(np.unique(rows.y[split.train])))
    if missing:
        log.warning(
            "%s split: test classes never seen in training: %s",
            split.protocol,
            ", ".join(rows.class_names[i] for i in missing),
        )
    scaler = FeatureScaler().fit(rows.x[split.train])
    result = train_model(
        scaler.transform(rows.x[split.train]),
        rows.y[split.train],
        len(rows.class_names),
        settings,
        filters=filters,
        progress=progress,
    )
    predicted = predict_classes(result.model, scaler.transform(rows.x[split.test]))
    metrics = classification_metrics(rows.y[split.test], predicted, list(rows.class_names))
    summary.update(
        train_rows=int(len(split.train)),
        test_rows=int(len(split.test)),
        duplicates_removed=split.duplicates_removed,
        accuracy=metrics["accuracy"],
        macro_f1=metrics["f1"]["macro"],
        recall={row["class"]: row["recall"] for row in metrics["per_class"] if row["support"]},
        confusion_matrix=metrics["confusion_matrix"],
    )
    return summary


def run_protocols(
    rows: OriginRows,
    protocols: tuple[str, ...],
    settings,
    filters: tuple[int, ...] = DEFAULT_FILTERS,
    seed: int = 0,
    progress: bool = False,
) -> list[dict]:
    """Split, train and score once per protocol; the same settings and seed for each."""
    results = []
    for protocol in protocols:
        split = make_split(rows, protocol, seed)
        if split.available:
            log.info(
                "%s split: %d train rows, %d test rows, %d test duplicates of training rows "
                "removed",
                protocol,
                len(split.train),
                len(split.test),
                split.duplicates_removed,
            )
        else:
            log.warning("%s split not available: %s", protocol, split.reason)
        results.append(evaluate_split(rows, split, settings, filters, progress))
    return results


def format_protocol_table(results: list[dict], class_names: tuple[str, ...]) -> str:
    """One Markdown table: a row per protocol, recall per class, rules underneath."""
    head = ["protocol", "train rows", "test rows", "duplicates removed", "accuracy", "macro F1"]
    head += [f"recall {name}" for name in class_names]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for result in results:
        if not result["available"]:
            cells = [result["protocol"], f"not available: {result['reason']}"]
            cells += [""] * (len(head) - len(cells))
        else:
            cells = [
                result["protocol"],
                str(result["train_rows"]),
                str(result["test_rows"]),
                str(result["duplicates_removed"]),
                f"{result['accuracy']:.4f}",
                f"{result['macro_f1']:.4f}",
            ]
            recall = result["recall"]
            cells += [f"{recall[name]:.4f}" if name in recall else "-" for name in class_names]
        lines.append("| " + " | ".join(cells) + " |")
    rules = [f"- {r['protocol']}: {r['rule']}" for r in results]
    return "\n".join([*lines, "", *rules, f"- every protocol: {DEDUPE_RULE}", ""])


def evaluate_protocols(
    ws,
    data_dir: Path | None,
    choice: str = "all",
    *,
    view: str = "19",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    progress: bool = False,
) -> str:
    """Run the chosen protocols on a folder (default: synthetic rows); save and return the table.

    Results go to ``<workdir>/evaluation/protocols.{json,md}``; the model of the main chain in
    the workdir is not touched.
    """
    from mcu_ids.data.provenance import load_rows_with_origin
    from mcu_ids.model.train import TrainSettings

    protocols = protocol_names(choice)
    if data_dir is None:
        from mcu_ids.data.synthetic import write_synthetic_dataset

        data_dir = write_synthetic_dataset(ws.synthetic_dir, seed=seed)
        log.warning("no --data given: evaluating on synthetic rows in %s", data_dir)
    rows = load_rows_with_origin(Path(data_dir), view=view)
    settings = TrainSettings(epochs=epochs, seed=seed)
    results = run_protocols(rows, protocols, settings, seed=seed, progress=progress)
    meta = {
        "source": str(Path(data_dir).resolve()),
        "view": view,
        "variant": rows.variant,
        "class_names": list(rows.class_names),
        "rows": int(len(rows.y)),
        "files": list(rows.files),
        "epochs": epochs,
        "seed": seed,
        "dedupe_rule": DEDUPE_RULE,
    }
    save_protocol_results(results, meta, ws.root / EVALUATION_DIR)
    return format_protocol_table(results, rows.class_names)


def save_protocol_results(results: list[dict], meta: dict, out_dir: Path) -> list[Path]:
    """Write ``protocols.json`` and ``protocols.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    table = format_protocol_table(results, tuple(meta["class_names"]))
    return [
        write_json(out_dir / "protocols.json", {**meta, "results": results}),
        write_atomic(out_dir / "protocols.md", f"### Evaluation protocols\n\n{table}"),
    ]
