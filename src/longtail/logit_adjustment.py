"""Post-hoc logit adjustment (Menon et al. 2021): predict with logits - tau * log(train class prior).

A model trained on long-tailed data favours frequent classes; subtracting tau * log(prior) from its
logits moves the decision towards a class-balanced one, which is what a macro-F1 leaderboard on a
balanced test set rewards. The chosen tau and the prior live in the model directory
(`ModelDir.save_adjustment`), so evaluate, predict and the submission all apply the same adjustment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longtail.atomic_file import atomic_path
from longtail.scoring import PairedGain, is_balanced, macro_f1, paired_gains

# The values `evaluate.posthoc_tau: tune` tries on the val split.
TAU_GRID = tuple(float(t) for t in np.round(np.arange(0.0, 2.01, 0.25), 2))


@dataclass(frozen=True)
class LogitAdjustment:
    """tau and the train split's log class prior (by class index)."""

    tau: float
    log_prior: list[float]

    @classmethod
    def from_counts(cls, tau: float, class_counts: list[int] | np.ndarray) -> LogitAdjustment:
        """From per-class train counts (a class with no rows counts as one, to keep log finite)."""
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        return cls(tau=float(tau), log_prior=np.log(counts / counts.sum()).tolist())

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """softmax(logits - tau * log prior), computed from softmax(logits) (same argmax, renormalised)."""
        log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None))
        z = log_p - self.tau * np.asarray(self.log_prior)[None, :]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    @classmethod
    def from_record(cls, data: Any) -> LogitAdjustment:
        """From its JSON record (ModelDir.adjustment reads it).

        Raises:
            ValueError, KeyError, TypeError: the record is not {"tau": number, "log_prior": [numbers]}.
        """
        return cls(tau=float(data["tau"]), log_prior=[float(v) for v in data["log_prior"]])


@dataclass(frozen=True)
class PosthocChoice:
    """The adjustment chosen on the val split and the target-prior val macro-F1 before (tau 0) and after it.

    by_tau holds the val macro-F1 of every tau scored (the whole grid when tuned), gains each one's
    difference from tau 0 with its paired bootstrap interval, and best_tau the one with the highest
    val figure. On a val split of a few thousand images neighbouring taus often differ by far less
    than that figure's noise: tuning adopts best_tau only when its gain's interval lies above zero.
    """

    adjustment: LogitAdjustment
    val_macro_f1_before: float
    val_macro_f1_after: float
    tuned: bool
    by_tau: dict[float, float] = field(default_factory=dict)
    gains: dict[float, PairedGain] = field(default_factory=dict)
    best_tau: float = 0.0

    def curve(self) -> str:
        """by_tau as text, e.g. "tau 0: 0.8739, 0.25: 0.8716, 0.5: 0.8749"."""
        return "tau " + ", ".join(f"{t:g}: {f:.4f}" for t, f in sorted(self.by_tau.items()))

    @property
    def gain(self) -> PairedGain | None:
        """The best tau's gain over no adjustment (None when no tau > 0 led on val)."""
        return self.gains.get(self.best_tau) if self.best_tau else None

    def within_noise(self) -> bool:
        """Whether tuning kept tau 0 because the best tau led on val by less than the split can tell apart."""
        return self.tuned and self.best_tau != self.adjustment.tau


def choose_adjustment(setting: float | str, probs: np.ndarray, labels: np.ndarray,
                      class_counts: list[int] | np.ndarray,
                      grid: tuple[float, ...] = TAU_GRID, *, target_prior: str = "balanced") -> PosthocChoice:
    """Resolve `evaluate.posthoc_tau` on the val split's predictions.

    Tuning reads the target-prior macro-F1: on a val split with the training prior, plain macro-F1
    is already best at tau 0 (the prior-matched decision), so only the balanced estimate can find
    the shift a balanced test set rewards. Every tau scored also gets its gain over tau 0 with a
    paired stratified-bootstrap interval (longtail.scoring.paired_gains).

    Args:
        setting: a fixed tau, or "tune": the grid value with the highest val macro-F1 (the smallest
            such tau on a tie) when its gain over tau 0 is clear (the interval's low end above
            zero), else tau 0: a lead inside the val split's noise is as likely to cost as to gain
            on the test (benchmarks/tau_rules.py).
        probs: the model's val class probabilities (N, C); labels: the val labels.
        class_counts: the train split's rows per class (the prior).
        target_prior: config `evaluate.target_prior`.
    """
    candidates = grid if setting == "tune" else (float(setting),)
    taus = sorted({0.0, *candidates})  # tau 0 always (first): the "before" figure and the gains' baseline
    n_classes = probs.shape[1]
    preds = np.stack([LogitAdjustment.from_counts(t, class_counts).apply(probs).argmax(axis=1) for t in taus])
    scores = {t: macro_f1(labels, p, n_classes, target_prior=target_prior) for t, p in zip(taus, preds, strict=True)}
    gains = dict(zip(taus, paired_gains(labels, preds, n_classes, balanced=is_balanced(target_prior)), strict=True))
    best = -max((scores[t], -t) for t in candidates)[1]
    tau = 0.0 if setting == "tune" and best and gains[best].low <= 0 else best
    return PosthocChoice(LogitAdjustment.from_counts(tau, class_counts), scores[0.0], scores[tau],
                         setting == "tune", scores, gains, best)


def plot_posthoc_gains(choice: PosthocChoice, path: str | Path, *, title: str = "") -> Path:
    """The val macro-F1 gain of every tau scored over no adjustment, with its paired 95% interval, as a PNG.

    The chosen tau is red, and the best on val orange when tuning did not adopt it; an interval
    that crosses the zero line is a gain the val split cannot tell from none.
    """
    from matplotlib.figure import Figure

    taus = sorted(choice.gains)
    gains = [choice.gains[t] for t in taus]
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="grey", linewidth=1)
    chosen = choice.adjustment.tau
    for t, g in zip(taus, gains, strict=True):
        colour = "tab:red" if t == chosen else "tab:orange" if t == choice.best_tau else "tab:blue"
        ax.errorbar([t], [g.gain], yerr=[[g.gain - g.low], [g.high - g.gain]], fmt="o", color=colour, capsize=4)
    ax.set_xlabel("post-hoc tau (logits - tau x log train prior)")
    ax.set_ylabel("val macro-F1 minus tau 0's")
    if choice.within_noise():
        headline = f"tau {chosen:g} kept: tau {choice.best_tau:g} (orange) led on val within the split's noise"
    else:
        headline = f"post-hoc tau {chosen:g} ({'tuned' if choice.tuned else 'set'})"
    ax.set_title(f"{headline}\nval macro-F1 {choice.val_macro_f1_before:.4f} at tau 0, {choice.val_macro_f1_after:.4f} "
                 "chosen (red); bars: paired 95% bootstrap interval" + (f"\n{title}" if title else ""), fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, what="post-hoc tau plot") as tmp:
        fig.savefig(tmp, format="png")
    return path


def probability_model(model: Any, adjustment: LogitAdjustment | None) -> Any:
    """The model as MLflow serves it: softmax(logits - tau * log prior), the probabilities predict computes.

    The registry's models output logits; this wraps one (sharing its layers) with the post-hoc
    shift as a frozen identity Dense layer (plain Keras layers, so it saves and loads anywhere)
    and a float32 softmax.
    """
    import keras

    x = model.output
    if adjustment is not None and adjustment.tau:
        n = len(adjustment.log_prior)
        shift = keras.layers.Dense(n, trainable=False, dtype="float32", name="posthoc_logit_adjustment")
        x = shift(x)
        shift.set_weights([np.eye(n, dtype=np.float32),
                           (-adjustment.tau * np.asarray(adjustment.log_prior)).astype(np.float32)])
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(model.inputs, outputs, name=model.name)
