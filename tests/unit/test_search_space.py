"""The search-space language: its bound checks against the config, --grid as its shorthand, search files,
the trial metric lines, and the parts of `tune` that need no training (options, durations, owners, tables)."""

import os
import re
import socket
from pathlib import Path

import pytest
import yaml

from longtail.comparison import Entry, rank
from longtail.config import config_from_dict, config_to_dict
from longtail.errors import ConfigError
from longtail.search_space import grid_space, parse_search
from longtail.sweep_plan import expand_grid, load_search, load_sweep
from longtail.trial_metrics import metric_line, parse_metric_line

REPO = Path(__file__).resolve().parents[2]
BASE = config_to_dict(config_from_dict({"name": "base"}))
# Katib's StdOut collector's default filter (katib pkg/metricscollector/v1beta1/common: DefaultFilter).
KATIB_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


def test_the_four_kinds_are_read_with_their_ranges():
    space = parse_search({"train.lr.initial": {"loguniform": [0.02, 0.4]}, "train.augmentation.erase": {"uniform": [0, 0.6]},
                          "train.epochs": {"int": [10, 40]},
                          "train.loss": {"choice": [{"name": "focal", "args": {"gamma": 2.0}}, {"name": "cross_entropy"}]}},
                         BASE)
    lr, erase, epochs, loss = space.dimensions
    assert (lr.kind, lr.low, lr.high, lr.log) == ("loguniform", 0.02, 0.4, True)
    assert (erase.kind, erase.low, erase.high, erase.log) == ("uniform", 0.0, 0.6, False)
    assert (epochs.kind, epochs.low, epochs.high) == ("int", 10, 40)
    assert loss.labels() == ["{name: focal, args: {gamma: 2.0}}", "{name: cross_entropy}"]
    assert loss.value_of(loss.labels()[0]) == {"name": "focal", "args": {"gamma": 2.0}}
    assert not space.is_grid and space.size() is None


@pytest.mark.parametrize(("block", "message"), [
    ({"train.lr.initial": {"loguniform": [0.02, 40]}}, r"train.lr.initial: the high end 40.0 is refused by the config: .*<= 10"),
    ({"train.epochs": {"int": [0, 5]}}, r"train.epochs: the low end 0 is refused .*between 1 and"),
    ({"model.args.weight_decay": {"uniform": [0, 5]}}, r"weight_decay: the high end 5.0 is refused"),
    ({"train.augmentation.erase": {"uniform": [0.2, 1.5]}}, r"erase: the high end 1.5 is refused .*between 0 and 1"),
    ({"train.lr.inital": {"uniform": [0.1, 0.2]}}, r"unknown config field train.lr.inital; did you mean train.lr.initial"),
    ({"train.loss": {"choice": [{"name": "nope"}, {"name": "focal"}]}}, r"the choice \{name: nope\} is refused.*unknown loss"),
    ({"train.lr.initial": {"loguniform": [0, 0.4]}}, r"loguniform needs LOW > 0"),
    ({"train.lr.initial": {"uniform": [0.4, 0.1]}}, r"needs LOW < HIGH"),
    ({"train.epochs": {"int": [10, 40.5]}}, r"int needs whole numbers"),
    ({"train.epochs": {"normal": [10, 40]}}, r"must be one of \{loguniform"),
    ({"train.epochs": {"choice": [10]}}, r"choice needs a list of at least two values"),
    ({"train.epochs": {"choice": [10, 10]}}, r"choice lists a value twice"),
    ({"train.lr.initial": {"uniform": ["a", 1]}}, r"needs \[LOW, HIGH\], two numbers"),
    ({}, r"must map config fields"),
])
def test_a_range_the_config_refuses_is_one_line_naming_the_entry(block, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_search(block, BASE)
    assert "\n" not in str(e.value)


def test_grid_is_shorthand_for_a_space_of_choices():
    from_grid = grid_space(["train.label_smoothing.factor=0.2,0.1", "weights.scheme=none,effective-number"], BASE)
    written = parse_search({"train.label_smoothing.factor": {"choice": [0.2, 0.1]},
                            "weights.scheme": {"choice": ["none", "effective-number"]}}, BASE)
    assert from_grid == written
    assert from_grid.is_grid and from_grid.size() == 4
    assert from_grid.grid_points()[:2] == [{"train.label_smoothing.factor": 0.2, "weights.scheme": "none"},
                                           {"train.label_smoothing.factor": 0.2, "weights.scheme": "effective-number"}]


def test_a_sweep_file_with_a_choice_search_block_is_the_same_sweep_as_the_grid(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\ntrain: {epochs: 3}\n")
    (tmp_path / "grid.yaml").write_text("name: b\nbase: base.yaml\nsearch:\n"
                                        "  train.label_smoothing.factor: {choice: [0.2, 0.1]}\n"
                                        "  train.lr.power: {choice: [1.0, 2.5]}\n")
    from_file = load_sweep([tmp_path / "grid.yaml"])
    from_flag = load_sweep([tmp_path / "base.yaml"], ["train.label_smoothing.factor=0.2,0.1", "train.lr.power=1.0,2.5"])
    assert [config_to_dict(c) for c in from_file] == [config_to_dict(c) for c in from_flag]
    assert from_file[0].name == "b-factor=0.2-power=1.0" and from_file[0].train.epochs == 3
    # the names and values of a plain --grid are what they were before the space existed
    assert [c.name for c in expand_grid({"name": "s"}, ["data.seed=1,2"])] == ["s-seed=1", "s-seed=2"]


def test_a_sweep_refuses_a_range_and_points_at_tune(tmp_path):
    (tmp_path / "s.yaml").write_text("base: ../s.yaml\nsearch:\n  train.lr.initial: {uniform: [0.01, 0.1]}\n")
    (tmp_path.parent / "s.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match="a grid takes choices only.*use `longtail tune`"):
        load_sweep([tmp_path / "s.yaml"])


def test_the_demo_search_file_loads_around_demo_yaml():
    plan = load_search(REPO / "experiments" / "demo-search.yaml")
    demo = config_to_dict(load_sweep([REPO / "experiments" / "demo.yaml"])[0])
    assert plan.name == "demo-search"
    assert {k: v for k, v in plan.base.items() if k != "name"} == {k: v for k, v in demo.items() if k != "name"}
    assert plan.space.keys() == ["train.lr.initial", "model.args.weight_decay", "train.augmentation.erase",
                                 "train.loss", "train.epochs"]
    assert demo["train"]["lr"]["initial"] == 0.1 and 0.02 < 0.1 < 0.4  # the demo's own value lies inside


def test_search_files_refuse_what_is_not_a_search(tmp_path):
    (tmp_path / "e.yaml").write_text("name: e\ntrain: {epochs: 3}\nsearch:\n  train.epochs: {int: [2, 4]}\n")
    plan = load_search(tmp_path / "e.yaml", ["train.batch_size=16"], ["train.lr.power=1,2"])
    assert plan.base["train"]["batch_size"] == 16 and plan.space.keys() == ["train.epochs", "train.lr.power"]
    with pytest.raises(ConfigError, match="searched twice"):
        load_search(tmp_path / "e.yaml", grid=["train.epochs=2,3"])
    (tmp_path / "n.yaml").write_text("name: n\n")
    with pytest.raises(ConfigError, match="nothing to search"):
        load_search(tmp_path / "n.yaml")
    (tmp_path / "x.yaml").write_text("base: n.yaml\nexperiments: []\nsearch: {}\n")
    with pytest.raises(ConfigError, match="an experiments: list is a sweep file"):
        load_search(tmp_path / "x.yaml")
    (tmp_path / "w.yaml").write_text("base: n.yaml\nset: {train.epochs: 0}\nsearch:\n  train.lr.power: {uniform: [1, 2]}\n")
    with pytest.raises(ConfigError, match="set: config field train.epochs"):
        load_search(tmp_path / "w.yaml")


def test_metric_lines_carry_a_timestamp_and_match_katibs_default_filter():
    line = metric_line({"epoch": 3, "val_macro_f1": 0.87312345}, when=0.25)
    assert line == "1970-01-01T00:00:00.250Z epoch=3 val_macro_f1=0.873123"
    stamp, values = parse_metric_line(line)
    assert stamp == "1970-01-01T00:00:00.250Z" and values == {"epoch": 3.0, "val_macro_f1": 0.873123}
    assert {m.group(1): float(m.group(2)) for m in KATIB_FILTER.finditer(line.split(" ", 1)[1])} == values
    assert parse_metric_line("demo epoch 3/40: loss 0.51, val macro-F1 0.8731") is None
    assert parse_metric_line("2026-12-07T14:03:11Z no pairs here") is None


def test_tune_options_durations_and_owners():
    from longtail.tune import TuneOptions, check_options, parse_duration, target_trials
    from longtail.tune_trials import owner_alive, owner_id

    assert [parse_duration(t) for t in ("4h", "90m", "1h30m", "45s", "120")] == [14400, 5400, 5400, 45, 120]
    with pytest.raises(ConfigError, match="must be a duration"):
        parse_duration("4 hours")
    space = parse_search({"train.lr.initial": {"uniform": [0.01, 0.1]}}, BASE)
    with pytest.raises(ConfigError, match="a grid takes choices only"):
        check_options(space, TuneOptions(study="s", sampler="grid"))
    with pytest.raises(ConfigError, match="--parallelism must be >= 1"):
        check_options(space, TuneOptions(study="s", parallelism=0))
    with pytest.raises(ConfigError, match="names a folder"):
        check_options(space, TuneOptions(study="../s"))
    for percent in (0, 100):
        with pytest.raises(ConfigError, match="--prune-after is a percent of each trial's schedule, 1 to 99"):
            check_options(space, TuneOptions(study="s", prune_after=percent))
    grid = grid_space(["train.epochs=1,2,3"], BASE)
    assert target_trials(grid, TuneOptions(study="s", sampler="grid")) == 3
    assert target_trials(space, TuneOptions(study="s", timeout=60)) is None
    assert owner_alive(owner_id()) is True
    host = socket.gethostname()
    assert owner_alive(f"{host}:{os.getpid()}:1") is False  # the pid is alive but started at another time
    assert owner_alive("elsewhere.example:1:1") is None


def test_stopped_trials_are_listed_apart_and_never_ranked():
    def entry(name, f1, state="", epoch=None, last=None):
        return Entry(run_id=name, name=name, params={"train.lr.initial": name}, macro_f1=f1, accuracy=None,
                     weighted_f1=None, epochs=None, seconds=None, state=state, stopped_epoch=epoch, last_val=last)

    board = rank([entry("a", 0.7), entry("p", None, "pruned", 4, 0.31), entry("b", 0.8, "complete")])
    assert board.best.name == "b"
    text = board.markdown("Study")
    ranked = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [line.split("|")[2].strip() for line in ranked] == ["b", "a"]
    assert "| p | p | pruned | 4 | 0.3100 |" in text and "Stopped early or failed" in text


def test_the_demo_search_file_is_valid_yaml_with_a_search_block():
    raw = yaml.safe_load((REPO / "experiments" / "demo-search.yaml").read_text())
    assert raw["base"] == "demo.yaml" and set(raw) == {"name", "base", "search"}


def test_the_base_configs_own_point_is_found_when_it_lies_in_the_space():
    plan = load_search(REPO / "experiments" / "demo-search.yaml")
    point = plan.space.point_of(plan.base)  # tune's trial 0: the advice, measured on the user's data
    assert point == {"train.lr.initial": 0.1, "model.args.weight_decay": 0.0005, "train.augmentation.erase": 0.5,
                     "train.loss": {"name": "logit_adjusted", "args": {"tau": 1.0}}, "train.epochs": 40}
    outside = parse_search({"train.lr.initial": {"uniform": [0.2, 0.4]}}, BASE)
    assert outside.point_of(BASE) is None  # the default 0.1 lies below the range


def test_the_pruners_steps_are_shares_of_each_trials_own_schedule():
    from longtail.tune_trials import schedule_steps

    # every trial reaches every percent once, whatever its length, so the median compares like with like
    for epochs in (1, 3, 4, 16, 34, 40, 100, 150):
        steps = [s for e in range(1, epochs + 1) for s in schedule_steps(e, epochs)]
        assert steps == list(range(1, 101)), epochs
    assert list(schedule_steps(3, 4)) == list(range(51, 76))  # epoch 3 of 4 holds 51%..75%
    assert list(schedule_steps(10, 16)) == [57, 58, 59, 60, 61, 62]
    assert not schedule_steps(1, 150)  # a schedule over 100 epochs: some epochs reach no new percent


def test_prune_after_sets_where_the_pruners_compare_from():
    from longtail.tune import TuneOptions, make_pruner, pruner_words

    default = make_pruner(TuneOptions(study="s"), 24)
    assert (default._n_warmup_steps, default._n_startup_trials) == (60, 5)  # from 60% after 5 finished trials
    assert make_pruner(TuneOptions(study="s", prune_after=20), 24)._n_warmup_steps == 20
    hyperband = make_pruner(TuneOptions(study="s", pruner="hyperband", prune_after=30), 24)
    assert hyperband._min_resource == 10  # its first rung at a third of the start
    assert pruner_words(TuneOptions(study="s", prune_after=20)) == "median pruner from 20% of each schedule"
    assert pruner_words(TuneOptions(study="s", pruner="none", prune_after=20)) == "no pruner"


def test_a_study_whose_pruner_counted_epochs_is_not_gone_on_with(tmp_path):
    import optuna

    from longtail.sweep_plan import SearchPlan
    from longtail.tune import TuneOptions, open_study

    plan = load_search(Path(__file__).resolve().parents[2] / "experiments" / "demo-search.yaml")
    options = TuneOptions(study="old", trials=2)
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    old = optuna.create_study(study_name="old", storage=optuna.storages.JournalStorage(backend), direction="maximize")
    old.add_trial(optuna.trial.create_trial(value=0.8, intermediate_values={3: 0.7}))  # steps were epochs
    with pytest.raises(ConfigError, match="give a new --study"):
        open_study(plan, options, tmp_path, 2)
    (tmp_path / "new").mkdir()
    fresh = open_study(SearchPlan(plan.name, plan.base, plan.space, plan.path), TuneOptions(study="new", trials=2),
                       tmp_path / "new", 2)
    assert fresh.user_attrs["pruning_steps"] == "percent of the trial's schedule"
