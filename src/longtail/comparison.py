"""The leaderboard of a sweep: experiments ranked by macro-F1, with the knobs that differ between them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from longtail.config import config_from_dict, config_to_dict, flatten
from longtail.errors import LongtailError
from longtail.tracking.names import DATASET_FINGERPRINT_PARAM, SEED_RUN_PARAM

# Params every run differs in by construction: never a "knob".
NOT_KNOBS = {"name", SEED_RUN_PARAM, DATASET_FINGERPRINT_PARAM}


@dataclass
class Entry:
    """One experiment of a sweep, as MLflow recorded it."""

    run_id: str
    name: str
    params: dict[str, str]
    macro_f1: float | None
    accuracy: float | None
    weighted_f1: float | None
    epochs: int | None
    seconds: float | None
    lb_score: float | None = None
    gate: str | None = None
    macro_f1_plain: float | None = None
    interval: tuple[float, float] | None = None
    test_macro_f1: float | None = None
    # A search trial's end (tracking.names TRIAL_STATE_TAG): "complete", "pruned" or "failed"; "" for a
    # sweep's experiment. A pruned trial has the epoch it stopped at and that epoch's val figure.
    state: str = ""
    stopped_epoch: int | None = None
    last_val: float | None = None

    @property
    def stopped(self) -> bool:
        """A trial the search stopped early or that failed: listed apart, never ranked."""
        return self.state in STOPPED_STATES

    def indistinguishable_from(self, other: Entry) -> bool:
        """Whether this entry's macro-F1 interval overlaps `other`'s: the val split cannot rank the two."""
        if self.interval is None or other.interval is None:
            return False
        return self.interval[0] <= other.interval[1] and other.interval[0] <= self.interval[1]


STOPPED_STATES = ("pruned", "failed")


@dataclass
class Leaderboard:
    """Entries best first, the knobs that differ, and the knob whose values move macro-F1 most."""

    entries: list[Entry]
    knobs: list[str]
    largest_effect: tuple[str, float] | None
    lb_mean_difference: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Entry:
        """The top entry (highest macro-F1)."""
        return self.entries[0]

    @property
    def has_intervals(self) -> bool:
        """Whether any entry carries a macro-F1 interval."""
        return any(e.interval is not None for e in self.entries)

    @property
    def indistinguishable_from_best(self) -> list[Entry]:
        """The entries below the best whose intervals overlap the best one's."""
        return [e for e in self.entries[1:] if e.indistinguishable_from(self.best)]

    def markdown(self, title: str = "Leaderboard") -> str:
        """The table the seed log (docs/seed-log.md) kept by hand, as Markdown (KFP's Markdown artifact, report files).

        macro-F1 is the run's target-prior estimate with its 95% interval; ≈ marks a run whose
        interval overlaps the best one's (the val split cannot tell them apart).
        """
        has_lb = any(e.lb_score is not None for e in self.entries)
        has_plain = any(e.macro_f1_plain is not None for e in self.entries)
        has_test = any(e.test_macro_f1 is not None for e in self.entries)
        head = ["#", "experiment", *self.knobs, "macro-F1", *(["95% interval"] if self.has_intervals else []),
                *(["val as drawn"] if has_plain else []), *(["test macro-F1"] if has_test else []),
                "accuracy", "weighted-F1", "epochs", "wall time"]
        if has_lb:
            head += ["LB", "LB − local"]
        lines = [f"# {title}", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join("---:" if i == 0 or i > 1 + len(self.knobs) else "---" for i in range(len(head))) + "|"]
        for rank, e in enumerate([e for e in self.entries if not e.stopped], 1):
            row = [str(rank), e.name, *(e.params.get(k, "") for k in self.knobs), _f(e.macro_f1)]
            if self.has_intervals:
                tie = " ≈" if rank > 1 and e.indistinguishable_from(self.best) else ""
                row.append("" if e.interval is None else f"{e.interval[0]:.4f}–{e.interval[1]:.4f}{tie}")
            row += [_f(e.macro_f1_plain)] if has_plain else []
            row += [_f(e.test_macro_f1)] if has_test else []
            row += [_f(e.accuracy), _f(e.weighted_f1), "" if e.epochs is None else str(e.epochs),
                    "" if e.seconds is None else f"{e.seconds:.0f} s"]
            if has_lb:
                diff = None if e.lb_score is None or e.macro_f1 is None else e.lb_score - e.macro_f1
                row += [_f(e.lb_score), _f(diff, signed=True)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        stopped = [e for e in self.entries if e.stopped]
        if stopped:
            lines += [f"**Stopped early or failed** ({len(stopped)}; not ranked: their last figure is an "
                      "early epoch's, not a finished model's):", "",
                      "| trial | " + " | ".join([*self.knobs, "state", "epochs", "last val macro-F1"]) + " |",
                      "|" + "---|" * (len(self.knobs) + 4)]
            lines += ["| " + " | ".join([e.name, *(e.params.get(k, "") for k in self.knobs), e.state,
                                         "" if e.stopped_epoch is None else str(e.stopped_epoch), _f(e.last_val)]) + " |"
                      for e in stopped]
            lines.append("")
        if self.largest_effect:
            knob, spread = self.largest_effect
            lines.append(f"**Largest effect:** `{knob}` moves mean macro-F1 by {spread:.4f} across its values.")
        ties = self.indistinguishable_from_best
        if ties:
            lines.append(f"**≈ best:** {', '.join(e.name for e in ties)}: their intervals overlap "
                         f"{self.best.name}'s, so the val split cannot rank them below it.")
        if self.lb_mean_difference is not None:
            lines.append(f"**LB − local macro-F1:** {self.lb_mean_difference:+.4f} on average.")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _f(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def is_config_key(key: str) -> bool:
    """A dotted key of the experiment config (a knob), not a fact a run logged (data.classes, weights.max)."""
    return key.startswith("model.args.") or key in flatten(config_to_dict(config_from_dict({})))


def differing_knobs(params: list[dict[str, str]]) -> list[str]:
    """Dotted config keys whose value is not the same in every experiment (sorted)."""
    keys = sorted(k for k in {k for p in params for k in p} - NOT_KNOBS if is_config_key(k))
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def largest_effect(entries: list[Entry], knobs: list[str]) -> tuple[str, float] | None:
    """The knob whose per-value mean macro-F1 spans the widest range (max mean − min mean).

    Knobs that always change together (a step schedule's boundaries, values and name) split the
    experiments the same way and are named together, "a + b + c".
    """
    scored = [e for e in entries if e.macro_f1 is not None]
    by_partition: dict[frozenset, list[str]] = {}
    for knob in knobs:
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(scored):
            groups.setdefault(e.params.get(knob, ""), []).append(i)
        if len(groups) >= 2:
            by_partition.setdefault(frozenset(frozenset(g) for g in groups.values()), []).append(knob)
    best: tuple[str, float] | None = None
    for partition, names in by_partition.items():
        means = [sum(scored[i].macro_f1 for i in g) / len(g) for g in partition]
        spread = max(means) - min(means)
        if best is None or spread > best[1]:
            best = (" + ".join(sorted(names)), spread)
    return best


def rank(entries: list[Entry]) -> Leaderboard:
    """Sort by macro-F1 (missing last) and find the differing knobs and the largest effect."""
    if not entries:
        raise LongtailError("no experiments to compare")
    ordered = sorted(entries, key=lambda e: (e.stopped, e.macro_f1 is None, -(e.macro_f1 or 0.0), e.name))
    knobs = differing_knobs([e.params for e in ordered])
    diffs = [e.lb_score - e.macro_f1 for e in ordered if e.lb_score is not None and e.macro_f1 is not None]
    return Leaderboard(entries=ordered, knobs=knobs, largest_effect=largest_effect(ordered, knobs),
                       lb_mean_difference=sum(diffs) / len(diffs) if diffs else None)
