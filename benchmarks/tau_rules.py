"""What the post-hoc tau choice (evaluate.posthoc_tau: tune) wins or loses on a balanced test, rule by rule.

On a val split whose tail classes have a dozen images, neighbouring taus often differ by less than
the val figure's noise, so the tau that wins on val can lose on the test. This draws many val
splits the size of the real one and compares, on held-out test images, the tau each rule picks:
- argmax: the tau with the highest balanced val macro-F1 (what `tune` did before);
- tune: that tau only when its paired bootstrap interval over tau 0 lies above zero
  (longtail.logit_adjustment.choose_adjustment: what `tune` does), else no adjustment;
- none: tau 0 always.

A trained model's test probabilities are split per class into two halves: val splits are drawn
(with the real val split's per-class counts, with replacement) from the first half, and every rule's
tau is scored on the second. Nothing is timed: this prints each rule's mean test macro-F1, its
spread, its worst draws, and how often it chose each tau; then each rule's choice on the real val split.
Run: python benchmarks/tau_rules.py MODEL_DIR TRAIN_H5 VAL_H5 TEST_H5 TEST_LABELS_CSV [--tta] [--draws 200]
(MODEL_DIR from `longtail train` on TRAIN_H5/VAL_H5; TEST_H5 an unlabelled test ingest, TEST_LABELS_CSV
its id,label truth, e.g. from `longtail data fashion-mnist-lt`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from longtail.logit_adjustment import TAU_GRID, LogitAdjustment, choose_adjustment
from longtail.model_dir import ModelDir
from longtail.prediction import open_split_for_model, predict_probabilities
from longtail.scoring import macro_f1
from longtail.splits import read_ids, read_info
from longtail.submission import read_submission, submission_id

RULES = ("argmax (best on val)", "tune (a clear gain)", "none (tau 0)")


def predictions_by_tau(probs: np.ndarray, counts: list[int]) -> np.ndarray:
    """(taus, N) argmax predictions at every tau of the grid."""
    return np.stack([LogitAdjustment.from_counts(t, counts).apply(probs).argmax(axis=1) for t in TAU_GRID])


def rule_choices(probs: np.ndarray, labels: np.ndarray, counts: list[int]) -> dict[str, float]:
    """The tau each rule picks on one val split."""
    choice = choose_adjustment("tune", probs, labels, counts)
    return {RULES[0]: choice.best_tau, RULES[1]: choice.adjustment.tau, RULES[2]: 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("model_dir", "train_h5", "val_h5", "test_h5", "test_labels"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--tta", action="store_true", help="flip TTA, as evaluate.tta")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model_dir = ModelDir(args.model_dir)
    preprocessing, _ = open_split_for_model(model_dir, args.test_h5)
    names = preprocessing.class_names
    n = len(names)
    model = model_dir.load_model()
    counts = read_info(args.train_h5).class_counts()
    val_labels = read_info(args.val_h5).labels
    assert val_labels is not None
    val_counts = np.bincount(val_labels, minlength=n)
    truth = read_submission(args.test_labels, what="labels")
    test_labels = np.array([names.index(truth[submission_id(i)]) for i in read_ids(args.test_h5)])
    test_probs = predict_probabilities(model, preprocessing, args.test_h5, tta=args.tta)
    val_probs = predict_probabilities(model, preprocessing, args.val_h5, tta=args.tta)
    test_preds = predictions_by_tau(test_probs, counts)

    rng = np.random.default_rng(args.seed)
    pool, held = [], []  # per class: test rows val splits are drawn from, and rows the rules are scored on
    for c in range(n):
        rows = rng.permutation(np.flatnonzero(test_labels == c))
        pool.append(rows[: len(rows) // 2])
        held.append(rows[len(rows) // 2 :])
    held_rows = np.concatenate(held)
    held_f1 = np.array([macro_f1(test_labels[held_rows], p[held_rows], n, target_prior="train") for p in test_preds])
    full_f1 = [macro_f1(test_labels, p, n, target_prior="train") for p in test_preds]
    print(f"{n} classes; val counts {val_counts.min()}-{val_counts.max()} per class; test halves of "
          f"{min(map(len, pool))}-{max(map(len, pool))}; {args.draws} simulated val splits; TTA {'on' if args.tta else 'off'}")
    print("test macro-F1 by tau (whole test): " + ", ".join(f"{t:g}: {f:.4f}" for t, f in zip(TAU_GRID, full_f1, strict=True)))

    picked: dict[str, list[float]] = {name: [] for name in RULES}
    for _ in range(args.draws):
        rows = np.concatenate([rng.choice(pool[c], size=int(val_counts[c]), replace=True) for c in range(n) if val_counts[c]])
        for name, tau in rule_choices(test_probs[rows], test_labels[rows], counts).items():
            picked[name].append(tau)

    index = {t: i for i, t in enumerate(TAU_GRID)}
    print(f"\n{'rule':22s} {'mean test':>10s} {'sd':>7s} {'worst 5%':>9s} {'vs none':>8s}  taus chosen (held-out half)")
    none = held_f1[0]
    for name, taus in picked.items():
        scores = held_f1[[index[t] for t in taus]]
        chosen = Counter(taus)
        print(f"{name:22s} {scores.mean():10.4f} {scores.std():7.4f} {np.quantile(scores, 0.05):9.4f} "
              f"{scores.mean() - none:+8.4f}  " + ", ".join(f"{t:g} x{k}" for t, k in sorted(chosen.items())))
    print("\nthe real val split (test: the whole test set):")
    for name, tau in rule_choices(val_probs, val_labels, counts).items():
        print(f"  {name:22s} tau {tau:g}: test {full_f1[index[tau]]:.4f}")


if __name__ == "__main__":
    main()
