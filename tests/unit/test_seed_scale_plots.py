"""The evaluation plots at the seed's 209 classes: the per-class figure gains a worst/best panel, the
confusion matrix keeps its readable size (the images themselves were looked at when this was written)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from matplotlib.image import imread
from seed_scale_scores import NAMES, seed_scale_scores

from longtail.evaluation import ClassResult, plot_confusion_matrix, plot_f1_vs_frequency
from longtail.scaled_lt import SEED_IMAGES, scaled_counts


def test_209_classes_get_a_worst_and_best_panel_and_a_capped_matrix(tmp_path):
    scores = seed_scale_scores(NAMES)
    counts = np.asarray(scaled_counts(SEED_IMAGES, len(NAMES)))
    per_class = [ClassResult(**asdict(c), train_count=int(counts[c.index])) for c in scores.per_class]
    wide = imread(plot_f1_vs_frequency(per_class, tmp_path / "f1.png", macro_f1=scores.macro_f1))
    few = imread(plot_f1_vs_frequency(per_class[:20], tmp_path / "f1_20.png", macro_f1=scores.macro_f1))
    assert wide.shape[1] / wide.shape[0] > 2.0 > few.shape[1] / few.shape[0]  # the second panel is there
    # The bars panel is drawn: its right half holds green (best) bars.
    right = wide[:, wide.shape[1] * 2 // 3:, :3]
    green = (right[..., 1] > 0.6) & (right[..., 0] < 0.5) & (right[..., 2] < 0.5)
    assert green.mean() > 0.02
    cm = imread(plot_confusion_matrix(scores.confusion, NAMES, tmp_path / "cm.png"))
    assert max(cm.shape[:2]) < 1600
