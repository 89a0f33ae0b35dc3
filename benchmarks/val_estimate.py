"""How far the balanced val macro-F1 (evaluate.target_prior: balanced) can be from the balanced test's, and
which change to the estimate or to the split narrows it.

A trained model's predictions on a class-balanced, labelled test split give each class's row of
prediction rates. Val splits are then drawn from those rows with the val split's own per-class counts
(the model held fixed), and each draw is scored the ways below against the test figure:
- balanced: what longtail logs (each val image weighs 1/its class's val count);
- bootstrap-corrected: 2 x balanced - the mean of a stratified bootstrap of it (a bias correction);
- shrunk: each class's F1 pulled towards the mean F1 by SHRINK pseudo-images (empirical Bayes);
- min-N val: the balanced figure with at least N val images in every class, those images taken
  from training (printed: how many training images each tail class would lose).
The split's actual figure is printed beside them. Nothing is timed: this prints bias, sd and the chance
of landing within 0.02 of the test (the bar of issue 20).
Run: python benchmarks/val_estimate.py MODEL_DIR TRAIN_H5 VAL_H5 TEST_H5 TEST_LABELS_CSV [--tta] [--tau 0,0.25]
(MODEL_DIR from `longtail train` on TRAIN_H5/VAL_H5; TEST_H5 an unlabelled test ingest, TEST_LABELS_CSV
its id,label truth, e.g. from `longtail data fashion-mnist-lt`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from longtail.logit_adjustment import LogitAdjustment
from longtail.model_dir import ModelDir
from longtail.prediction import open_split_for_model, predict_probabilities
from longtail.scoring import bootstrap_interval, class_scores, confusion_counts, macro_f1_of
from longtail.splits import read_ids, read_info
from longtail.submission import read_submission, submission_id

SHRINK = 10.0  # pseudo-images of the mean F1 added to each class
MIN_VAL = (20, 30, 40)
BAR = 0.02


def draw_confusions(rates: np.ndarray, counts: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, C, C) val confusion matrices: class c's `counts[c]` images predicted as its row of `rates`."""
    out = np.zeros((draws, *rates.shape), dtype=np.int64)
    for c, (row, n) in enumerate(zip(rates, counts, strict=True)):
        if n:
            out[:, c, :] = rng.multinomial(int(n), row, size=draws)
    return out


def shrunk_macro(confusions: np.ndarray, strength: float) -> np.ndarray:
    """Balanced macro-F1 with each class's F1 shrunk towards the mean F1: (n_c F1_c + k mean) / (n_c + k)."""
    _, _, f1, _ = class_scores(confusions, balanced=True)
    n = confusions.sum(axis=-1)
    mean = f1.mean(axis=-1, keepdims=True)
    return ((n * f1 + strength * mean) / (n + strength)).mean(axis=-1)


def bootstrap_corrected(confusions: np.ndarray, samples: int) -> np.ndarray:
    """2 x the balanced macro-F1 - the mean of its stratified bootstrap, per confusion matrix."""
    plain = np.asarray(macro_f1_of(confusions, balanced=True))
    means = np.array([bootstrap_interval(cm, balanced=True, samples=samples, seed=i).mean
                      for i, cm in enumerate(confusions)])
    return 2 * plain - means


def summary(name: str, estimates: np.ndarray, truth: float) -> str:
    err = estimates - truth
    return (f"   {name:<26s} {err.mean():+8.4f} {err.std():8.4f} {np.sqrt((err ** 2).mean()):8.4f} "
            f"{(np.abs(err) <= BAR).mean():8.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("train_h5", type=Path, help="the model's train split: its class counts are the prior tau shifts by")
    parser.add_argument("val_h5", type=Path)
    parser.add_argument("test_h5", type=Path)
    parser.add_argument("test_labels", type=Path)
    parser.add_argument("--tta", action="store_true", help="flip TTA, as evaluate.tta")
    parser.add_argument("--tau", default="0,0.25,0.5", help="comma-separated post-hoc taus to score at")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--bootstrap-draws", type=int, default=200, help="val draws given the bootstrap correction")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model_dir = ModelDir(args.model_dir)
    model = model_dir.load_model()
    preprocessing, _ = open_split_for_model(model_dir, args.val_h5)
    names = preprocessing.class_names
    n_classes = len(names)
    val_labels = read_info(args.val_h5).labels
    assert val_labels is not None, f"{args.val_h5} has no labels"
    val_counts = np.bincount(val_labels, minlength=n_classes)
    truth = read_submission(args.test_labels, what="labels")
    test_labels = np.array([names.index(truth[submission_id(i)]) for i in read_ids(args.test_h5)])
    train_counts = read_info(args.train_h5).class_counts()
    val_probs = predict_probabilities(model, preprocessing, args.val_h5, tta=args.tta)
    test_probs = predict_probabilities(model, preprocessing, args.test_h5, tta=args.tta)
    rng = np.random.default_rng(args.seed)
    print(f"val images per class: {val_counts.tolist()}; test: {np.bincount(test_labels, minlength=n_classes).tolist()}")
    for m in MIN_VAL:
        lost = np.maximum(m - val_counts, 0)
        print(f"   min {m} val per class moves {lost.sum()} images out of training: {lost[lost > 0].tolist()}")
    for tau in (float(t) for t in args.tau.split(",")):
        adjustment = LogitAdjustment.from_counts(tau, train_counts)
        val_pred = adjustment.apply(val_probs).argmax(axis=1)
        test_pred = adjustment.apply(test_probs).argmax(axis=1)
        test_cm = confusion_counts(test_labels, test_pred, n_classes)
        test_f1 = float(macro_f1_of(test_cm, balanced=True))
        actual = float(macro_f1_of(confusion_counts(val_labels, val_pred, n_classes), balanced=True))
        rates = test_cm / test_cm.sum(axis=1, keepdims=True)
        val_cm = confusion_counts(val_labels, val_pred, n_classes)
        val_recall = np.diag(val_cm) / np.maximum(val_counts, 1)
        test_recall = np.diag(rates)
        z = (val_recall - test_recall) / np.sqrt(np.maximum(test_recall * (1 - test_recall), 1e-6) / np.maximum(val_counts, 1))
        draws = draw_confusions(rates, val_counts, args.draws, rng)
        print(f"\ntau {tau}: balanced test {test_f1:.4f}; this split's balanced val {actual:.4f} ({actual - test_f1:+.4f})")
        worst = ", ".join(f"{names[c]} {val_recall[c]:.2f} vs {test_recall[c]:.2f} (n={val_counts[c]}, z={z[c]:+.1f})"
                          for c in np.argsort(z)[:3])
        print(f"   recall furthest below the test's on this val split: {worst}")
        print(f"   {'estimate, over ' + str(args.draws) + ' val draws':<26s} {'bias':>8s} {'sd':>8s} {'rmse':>8s} "
              f"{'|err|<=' + str(BAR):>8s}")
        print(summary("balanced (longtail)", np.asarray(macro_f1_of(draws, balanced=True)), test_f1))
        print(summary("bootstrap-corrected", bootstrap_corrected(draws[: args.bootstrap_draws], 200), test_f1))
        print(summary(f"shrunk (k={SHRINK:g})", shrunk_macro(draws, SHRINK), test_f1))
        for m in MIN_VAL:
            more = draw_confusions(rates, np.maximum(val_counts, m), args.draws, rng)
            print(summary(f"balanced, min {m} val", np.asarray(macro_f1_of(more, balanced=True)), test_f1))


if __name__ == "__main__":
    main()
