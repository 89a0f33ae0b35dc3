"""Evaluation scores at the seed's scale (209 scaled-LT classes, 21,753 val images) for artifact and plot tests."""

from __future__ import annotations

import numpy as np

from longtail.scaled_lt import SEED_CLASSES, SEED_IMAGES, class_name, class_styles, scaled_counts
from longtail.scoring import ClassificationScores, classification_scores

NAMES = [class_name(s) for s in class_styles(SEED_CLASSES)]


def seed_scale_scores(names: list[str], seed: int = 0) -> ClassificationScores:
    """Val predictions at the seed's profile (21,753 val images, max/min 600): the rarer a class the more
    often it is missed (15% right for the rarest, 90% for the largest), errors drawn towards the head."""
    rng = np.random.default_rng(seed)
    support = np.maximum(1, np.round(0.2 * np.asarray(scaled_counts(SEED_IMAGES, len(names))))).astype(int)
    y = np.repeat(np.arange(len(names)), support)
    right = 0.15 + 0.75 * np.log(support) / np.log(support.max())
    head = rng.choice(len(names), size=len(y), p=support / support.sum())
    wrong = np.where(rng.random(len(y)) < 0.5, head, rng.integers(0, len(names), len(y)))
    pred = np.where(rng.random(len(y)) < right[y], y, wrong)
    return classification_scores(y, pred, names)
