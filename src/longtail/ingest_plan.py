"""An ingest's plan: which listed files go to which split, in which row order, with which label."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from longtail.errors import DataError
from longtail.sources import Listing, SourceFile


def select_classes(counts: dict[str, int], *, min_per_class: int = 0, max_classes: int | None = None) -> list[str]:
    """The classes kept: at least `min_per_class` images, then the `max_classes` largest (ties by name).

    Returns:
        Kept class names, sorted (the index of each is its label).
    """
    if min_per_class < 0:
        raise DataError(f"--min-per-class must be >= 0, got {min_per_class}")
    if max_classes is not None and max_classes < 1:
        raise DataError(f"--max-classes must be >= 1, got {max_classes}")
    kept = [c for c, n in counts.items() if n >= min_per_class]
    if max_classes is not None:
        kept = sorted(kept, key=lambda c: (-counts[c], c))[:max_classes]
    return sorted(kept)


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, val), each class split in the same proportion, rows shuffled (seeded).

    Each class gives round(n * val_fraction) rows to val, but always keeps one for train. Rows are
    shuffled so any contiguous slice of a split mixes classes (chunked reads stay representative).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        rows = np.asarray(by_class[label])[rng.permutation(len(by_class[label]))]
        n_val = min(int(round(len(rows) * val_fraction)), len(rows) - 1)
        val.extend(rows[:n_val].tolist())
        train.extend(rows[n_val:].tolist())
    return [train[i] for i in rng.permutation(len(train))], [val[i] for i in rng.permutation(len(val))]


@dataclass
class IngestPlan:
    """Which files go to which split, in which row order, with which label, before anything is decoded."""

    source: str
    listing: Listing
    unlabelled: bool
    files: list[SourceFile]
    class_names: list[str]
    labels: list[int]  # by index into `files`; empty when unlabelled
    rows: dict[str, list[int]]  # split -> indices into `files`
    filtered: dict[str, int]  # classes and images left out by --min-per-class / --max-classes


def plan_ingest(listing: Listing, source: str, *, val_fraction: float, seed: int, min_per_class: int,
                max_classes: int | None, unlabelled: bool) -> IngestPlan:
    """Choose the classes and split the files stratified by class (or all into test when unlabelled).

    Raises:
        DataError: no images, no class with enough images, or only one class kept.
    """
    if not listing.files:
        hint = (
            f"; {listing.loose_images} images lie directly in it, not in class folders "
            "(use --unlabelled for a flat test folder)"
            if listing.loose_images
            else ""
        )
        refused = listing.rejected
        if refused.total:
            reason, n = refused.counts.most_common(1)[0]
            hint += f"; {refused.total} rejected, {n} of them {reason}, e.g. {refused.listed[0]['path']}"
        raise DataError(f"no images found in {source} ({listing.ignored} files ignored){hint}")
    if unlabelled:
        return IngestPlan(source, listing, True, listing.files, [], [], {"test": list(range(len(listing.files)))},
                          {"classes": 0, "images": 0})
    counts = Counter(f.label for f in listing.files)
    class_names = select_classes(dict(counts), min_per_class=min_per_class, max_classes=max_classes)  # type: ignore[arg-type]
    if not class_names:
        raise DataError(
            f"no class of {source} has --min-per-class {min_per_class} images (largest has {max(counts.values())})"
        )
    if len(class_names) == 1:
        raise DataError(
            f"only one class ({class_names[0]!r}) of {source} is kept, and a classifier needs at least two "
            "(one class trains to a meaningless macro-F1 of 1.0); add class folders or lower --min-per-class"
        )
    index = {name: i for i, name in enumerate(class_names)}
    files = [f for f in listing.files if f.label in index]
    labels = [index[f.label] for f in files]  # type: ignore[index]
    train_rows, val_rows = stratified_split(labels, val_fraction, seed)
    filtered = {"classes": len(counts) - len(class_names), "images": len(listing.files) - len(files)}
    return IngestPlan(source, listing, False, files, class_names, labels, {"train": train_rows, "val": val_rows},
                      filtered)
