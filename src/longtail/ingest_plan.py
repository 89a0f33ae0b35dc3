"""An ingest's plan: which listed files go to which split, in which row order, with which label."""

from __future__ import annotations

import math
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


def _smallest_val_fraction(n_images: int) -> float:
    """The smallest --val-fraction (to 0.001) that gives a class of `n_images` (>= 2) one val image."""
    fraction = math.ceil(500 / n_images) / 1000
    while round(n_images * fraction) < 1:  # round() halves to even: 0.5 gives 0
        fraction += 0.001
    return round(fraction, 3)


def empty_val_message(source: str, val_fraction: float, class_sizes: list[int], planned: int = 0,
                      example: str = "") -> str:
    """Why a labelled ingest's val split would be empty, and the fix: the --val-fraction that gives every
    class one val image, or, when `planned` val files were all rejected, those files.

    Args:
        class_sizes: the images of each class kept, as listed.
        example: one rejected file and its reason, named when the planned val files were all rejected.
    """
    if planned:
        return (f"the {planned} files planned for the val split of {source} were all rejected{example}, so it "
                "would be empty and train has nothing to validate on; fix those files or pass a larger "
                "--val-fraction")
    splittable = [n for n in class_sizes if n >= 2]
    if not splittable:
        return (f"every class of {source} has one image, which it keeps for train, so the val split would be empty "
                "and train has nothing to validate on; add images")
    return (f"--val-fraction {val_fraction:g} leaves the val split empty, and train needs one to validate on; pass "
            f"--val-fraction {_smallest_val_fraction(min(splittable)):g} or more (the smallest that gives each class "
            f"of {source} with two or more images one val image; a class of n images gives round(n x fraction))")


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
    val_fraction: float = 0.0

    def why_val_is_empty(self) -> str:
        """empty_val_message for this plan: why its val split came out empty, and the fix."""
        sizes = Counter(self.labels)
        named = self.listing.rejected.listed
        return empty_val_message(self.source, self.val_fraction, [sizes[i] for i in range(len(self.class_names))],
                                 planned=len(self.rows.get("val", [])),
                                 example=f" (e.g. {named[0]['path']}: {named[0]['reason']})" if named else "")


def plan_ingest(listing: Listing, source: str, *, val_fraction: float, seed: int, min_per_class: int,
                max_classes: int | None, unlabelled: bool) -> IngestPlan:
    """Choose the classes and split the files stratified by class (or all into test when unlabelled).

    Raises:
        DataError: no images, no class with enough images, only one class kept, or --val-fraction 0.
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
    if val_fraction == 0:  # no val split, whatever the files: said before any is decoded
        raise DataError(empty_val_message(source, val_fraction, [counts[name] for name in class_names]))
    train_rows, val_rows = stratified_split(labels, val_fraction, seed)
    filtered = {"classes": len(counts) - len(class_names), "images": len(listing.files) - len(files)}
    return IngestPlan(source, listing, False, files, class_names, labels, {"train": train_rows, "val": val_rows},
                      filtered, val_fraction)
