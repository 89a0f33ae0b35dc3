"""The target prior: macro-F1 as a class-balanced test set would give it, its bootstrap interval, and one home for it.

Every choice longtail makes (best epoch, gate, post-hoc tau, sweep ranking, champion, report, LB − local)
reads the figure `longtail.scoring` computes; these tests pin the arithmetic by hand and against
sklearn's `sample_weight`, check the interval's coverage on a simulated val split, and fail when any
module computes an F1 of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from longtail.comparison import Entry, rank
from longtail.errors import ConfigError, DataError
from longtail.logit_adjustment import choose_adjustment
from longtail.scoring import (
    PairedGain,
    bootstrap_interval,
    class_scores,
    classification_scores,
    confusion_counts,
    macro_f1,
    macro_f1_of,
    paired_gains,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "longtail"


def labels_from(confusion: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) whose confusion matrix is `confusion`."""
    y_true, y_pred = [], []
    for t, row in enumerate(confusion):
        for p, count in enumerate(row):
            y_true += [t] * count
            y_pred += [p] * count
    return np.array(y_true), np.array(y_pred)


def test_balanced_macro_f1_by_hand_on_a_small_confusion() -> None:
    # Head class 0 (100 val images), tail class 1 (10). 10 head images are called tail; 5 tail images head.
    cm = [[90, 10], [5, 5]]
    y, pred = labels_from(cm)
    # Plain: class 0 P = 90/95, R = 0.9; class 1 P = 5/15, R = 0.5.
    f_head = 2 * (90 / 95) * 0.9 / (90 / 95 + 0.9)
    f_tail = 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)
    assert macro_f1(y, pred, 2, target_prior="train") == pytest.approx((f_head + f_tail) / 2)
    # Balanced: rows divided by their counts -> [[0.9, 0.1], [0.5, 0.5]]. Recalls stay 0.9 and 0.5;
    # precision of head 0.9 / 1.4, of tail 0.5 / 0.6: on a balanced test set the tail's 10 % of a
    # head-sized class no longer swamps it.
    p0, p1 = 0.9 / 1.4, 0.5 / 0.6
    expected = (2 * p0 * 0.9 / (p0 + 0.9) + 2 * p1 * 0.5 / (p1 + 0.5)) / 2
    assert macro_f1(y, pred, 2, target_prior="balanced") == pytest.approx(expected)
    scores = classification_scores(y, pred, ["head", "tail"], target_prior="balanced")
    assert scores.macro_f1 == pytest.approx(expected)
    assert [c.recall for c in scores.per_class] == pytest.approx([0.9, 0.5])
    assert [c.precision for c in scores.per_class] == pytest.approx([p0, p1])
    assert [c.support for c in scores.per_class] == [100, 10]  # raw counts, as the report shows them
    assert scores.accuracy == pytest.approx(0.7)  # balanced accuracy: the mean recall


@pytest.mark.parametrize("seed", range(20))
def test_balanced_scores_equal_sklearn_with_inverse_count_sample_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 7))
    y = np.repeat(np.arange(n), rng.integers(1, 40, size=n))
    pred = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, n + 1, len(y)))  # class n: never true
    names = [f"c{i}" for i in range(n + 1)]
    weight = 1.0 / np.bincount(y)[y]
    s = classification_scores(y, pred, names, target_prior="balanced")
    assert s.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0, sample_weight=weight))
    assert s.weighted_f1 == pytest.approx(
        f1_score(y, pred, average="weighted", zero_division=0, sample_weight=weight))
    plain = classification_scores(y, pred, names)
    assert plain.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))


def test_on_an_already_balanced_split_both_priors_agree() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 40)
    pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 5, len(y)))
    assert macro_f1(y, pred, 5, target_prior="balanced") == pytest.approx(macro_f1(y, pred, 5, target_prior="train"))


def test_balanced_estimate_tracks_the_balanced_test_where_plain_does_not() -> None:
    """A classifier's val split with the training prior (IF 100), and a balanced test from the same classifier."""
    rng = np.random.default_rng(7)
    n_classes = 10
    confusion_p = rng.dirichlet(np.ones(n_classes) * 0.3, size=n_classes)
    confusion_p = 0.75 * np.eye(n_classes) + 0.25 * confusion_p  # P(pred | true)
    val_counts = np.round(1200 * 100 ** (-np.arange(n_classes) / (n_classes - 1))).astype(int)
    test_counts = np.full(n_classes, 1000)

    def draw(counts: np.ndarray) -> np.ndarray:
        return np.stack([rng.multinomial(c, confusion_p[i]) for i, c in enumerate(counts)])

    test = macro_f1_of(draw(test_counts), balanced=False)
    val = draw(val_counts)
    assert abs(macro_f1_of(val, balanced=True) - test) < 0.05
    assert test - macro_f1_of(val, balanced=False) > 0.05  # what choosing on plain val macro-F1 got wrong


def test_bootstrap_interval_covers_the_true_value_on_a_simulated_val_split() -> None:
    rng = np.random.default_rng(11)
    n_classes = 6
    confusion_p = 0.7 * np.eye(n_classes) + 0.3 * rng.dirichlet(np.ones(n_classes), size=n_classes)
    # The balanced macro-F1 of the classifier itself (the infinite balanced test set).
    truth = macro_f1_of(confusion_p * 1e6, balanced=False)
    counts = np.array([300, 150, 80, 40, 20, 12])
    covered, widths = 0, []
    trials = 150
    for t in range(trials):
        cm = np.stack([rng.multinomial(c, confusion_p[i]) for i, c in enumerate(counts)])
        ci = bootstrap_interval(cm, balanced=True, samples=400, seed=t)
        covered += ci.low <= truth <= ci.high
        widths.append(ci.high - ci.low)
    assert covered / trials >= 0.85, (covered, trials)
    assert 0.02 < float(np.median(widths)) < 0.3


def test_bootstrap_names_the_tail_classes_that_widen_the_interval() -> None:
    cm = np.array([[480, 10, 10], [5, 90, 5], [2, 2, 6]])
    ci = bootstrap_interval(cm, balanced=True, seed=1)
    assert ci.noisiest[0][:2] == (2, 10)  # the 10-image class varies most
    assert ci.low < macro_f1_of(cm, balanced=True) < ci.high
    assert bootstrap_interval(cm, balanced=True, seed=1) == ci  # seeded: reproducible


@pytest.mark.parametrize("chunk_cells", [None, 1])
def test_paired_gains_tell_a_real_improvement_from_a_one_image_one(chunk_cells, monkeypatch) -> None:
    """On a long-tailed val split: fixing a third of the errors is a clear gain, fixing one tail image is not."""
    import longtail.scoring as scoring

    if chunk_cells:  # one bootstrap draw per chunk: the memory bound for 200+ classes takes the same path
        monkeypatch.setattr(scoring, "_PAIRED_CHUNK_CELLS", chunk_cells)
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), [600, 200, 60, 15])
    base = np.where(rng.random(len(y)) < 0.8, y, (y + 1) % 4)
    wrong = np.flatnonzero(base != y)
    better = base.copy()
    better[wrong[::3]] = y[wrong[::3]]
    one = base.copy()
    one[np.flatnonzero((base != y) & (y == 3))[0]] = 3
    gains = paired_gains(y, np.stack([base, better, one, base]), 4, balanced=True, samples=500)
    assert gains[0] == gains[3] == PairedGain(0.0, 0.0, 0.0)  # a set against itself: no gain and no noise
    for preds, g in zip([better, one], gains[1:3], strict=True):
        assert g.gain == pytest.approx(macro_f1(y, preds, 4, target_prior="balanced")
                                       - macro_f1(y, base, 4, target_prior="balanced"))
        assert g.low <= g.gain <= g.high
    assert gains[1].low > 0.02  # clear of zero
    # The fixed tail image is left out of about a third of the draws: then the two sets score alike.
    assert gains[2].gain > 0 and gains[2].low == 0.0
    # Paired, the noise the two sets share cancels: the gain's interval is narrower than the set's own.
    own = bootstrap_interval(confusion_counts(y, better, 4), balanced=True, samples=500)
    assert gains[1].high - gains[1].low < own.high - own.low
    assert gains[1].text().startswith(f"{gains[1].gain:+.4f} (95% interval {gains[1].low:+.4f} to ")


def test_paired_gains_refuse_predictions_of_another_length() -> None:
    with pytest.raises(DataError, match="expected one row of 3 per set"):
        paired_gains([0, 1, 1], [0, 1, 1], 2, balanced=True)


def test_an_unknown_target_prior_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="evaluate.target_prior must be one of balanced, train"):
        macro_f1([0, 1], [0, 1], 2, target_prior="uniform")


def test_posthoc_tuning_on_the_balanced_estimate_finds_a_shift_plain_val_cannot() -> None:
    """A model that favours the head class: plain val macro-F1 is best at tau 0, the balanced one is not."""
    rng = np.random.default_rng(5)
    counts = [900, 100]
    labels = np.repeat([0, 1], [900, 60])
    # logit_0 - logit_1: the head sits at +3, the tail at +0.5 (mostly called head).
    d = np.where(labels == 0, rng.normal(3.0, 1.5, len(labels)), rng.normal(0.5, 1.5, len(labels)))
    logits = np.stack([d, np.zeros_like(d)], axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    plain = choose_adjustment("tune", probs, labels, counts, target_prior="train")
    balanced = choose_adjustment("tune", probs, labels, counts, target_prior="balanced")
    assert balanced.adjustment.tau > plain.adjustment.tau
    assert balanced.val_macro_f1_after > balanced.val_macro_f1_before


def test_the_leaderboard_ranks_by_the_target_prior_figure_and_marks_overlapping_intervals() -> None:
    def entry(name: str, f1: float, low: float, high: float, plain: float) -> Entry:
        return Entry(run_id=name, name=name, params={"name": name}, macro_f1=f1, accuracy=None, weighted_f1=None,
                     epochs=None, seconds=None, macro_f1_plain=plain, interval=(low, high))

    board = rank([entry("ce", 0.80, 0.77, 0.83, 0.76), entry("la", 0.85, 0.82, 0.88, 0.70),
                  entry("ldam", 0.70, 0.66, 0.74, 0.72)])
    assert [e.name for e in board.entries] == ["la", "ce", "ldam"]  # not by plain (ce 0.76 first)
    assert [e.name for e in board.indistinguishable_from_best] == ["ce"]
    text = board.markdown()
    assert "| 2 | ce | 0.8000 | 0.7700–0.8300 ≈ | 0.7600 |" in text
    assert "| 3 | ldam | 0.7000 | 0.6600–0.7400 | 0.7200 |" in text
    assert "**≈ best:** ce" in text


# F1 arithmetic: what a module would write to score predictions without longtail.scoring.
OWN_F1 = re.compile(r"f1_score|precision_recall_fscore_support|2 \* \w*p\w* \* \w*r\w* /")


def test_only_scoring_computes_an_f1() -> None:
    """The epoch callback, tau tuning, evaluation, the gate, the sweep and the report call longtail.scoring."""
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "scoring.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if OWN_F1.search(line)]
    assert offenders == []
    assert OWN_F1.search("from sklearn.metrics import f1_score")  # the pattern itself bites


@pytest.fixture
def scoring_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Swap scoring's per-class arithmetic for a recording one; the list gets `balanced` of every call."""
    import longtail.scoring as scoring

    calls: list[bool] = []
    real = scoring.class_scores

    def recording(confusion, *, balanced):
        calls.append(balanced)
        return real(confusion, balanced=balanced)

    monkeypatch.setattr(scoring, "class_scores", recording)
    return calls


def test_every_decision_point_reads_scoring(scoring_calls: list[bool]) -> None:
    """Tau tuning and evaluation's scores go through scoring's per-class arithmetic."""
    calls = scoring_calls
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    choose_adjustment("tune", probs, np.array([0, 1, 1]), [10, 1])
    assert calls and all(calls)  # balanced by default
    calls.clear()
    classification_scores([0, 1, 1], [0, 0, 1], ["a", "b"], target_prior="balanced")
    assert calls == [True]
    assert confusion_counts([0, 1, 1], [0, 0, 1], 2).tolist() == [[1, 0], [1, 1]]
    import longtail.scoring as scoring

    assert scoring.class_scores is not class_scores  # the recording one was in place; this module holds the real one


@pytest.mark.parametrize("prior", ["balanced", "train"])
def test_the_epoch_callback_tau_tuning_and_evaluation_give_one_macro_f1(prior: str, scoring_calls: list[bool]) -> None:
    """On random labels and logits, the three decision points give the same figure, all through scoring.class_scores."""
    from longtail.softmax import softmax
    from longtail.training.callbacks import ValMetrics

    rng = np.random.default_rng(7)
    n_classes = 6
    labels = rng.choice(n_classes, size=300, p=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    logits = rng.normal(size=(300, n_classes)) + 2.0 * np.eye(n_classes)[labels] * rng.random((300, 1))
    probs = softmax(logits)

    class Logits:  # the model ValMetrics asks for the val split's logits
        def predict(self, inputs, verbose=0):
            return logits

    callback = ValMetrics(None, labels, prior)
    callback.set_model(Logits())
    logs: dict[str, float] = {}
    callback.on_epoch_end(0, logs)
    tuned = choose_adjustment(0.0, probs, labels, np.bincount(labels), target_prior=prior).val_macro_f1_before
    evaluated = classification_scores(labels, probs.argmax(axis=1), [str(c) for c in range(n_classes)],
                                      target_prior=prior).macro_f1
    assert logs["val_macro_f1"] == tuned == evaluated
    weights = 1.0 / np.bincount(labels)[labels] if prior == "balanced" else None
    assert logs["val_macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(axis=1), average="macro",
                                                          sample_weight=weights), abs=1e-12)
    assert logs["val_macro_f1_plain"] == pytest.approx(f1_score(labels, probs.argmax(axis=1), average="macro"))
    assert scoring_calls[:2] == [prior == "balanced", False]  # the callback's two figures went through scoring


def test_longtail_run_summary_shows_the_prior_the_interval_and_the_plain_figure() -> None:
    from longtail.tracking.queries import RunSummary

    s = RunSummary(run_id="r", experiment_id="1", macro_f1=0.85621, gate_passed=True, macro_f1_plain=0.81164,
                   interval=(0.8251, 0.8849), target_prior="balanced")
    assert s.describe_macro_f1() == ("0.8562 (balanced target prior, 95% interval 0.8251-0.8849; "
                                     "val as drawn 0.8116)")
    assert RunSummary(run_id="r", experiment_id="1", macro_f1=0.5, gate_passed=True).describe_macro_f1() == "0.5000"
