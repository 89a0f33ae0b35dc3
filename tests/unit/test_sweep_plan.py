"""Sweep plans and leaderboards: grids, sweep files, data groups, ranking and the largest effect."""

from pathlib import Path

import pytest

from longtail.comparison import Entry, differing_knobs, largest_effect, rank
from longtail.config import config_from_dict, config_to_dict
from longtail.errors import ConfigError
from longtail.knobs import config_to_params
from longtail.sweep_plan import expand_grid, group_by_data, load_sweep, shared_data_config

REPO = Path(__file__).resolve().parents[2]


def test_grid_expands_every_combination_with_readable_names():
    configs = expand_grid({"name": "base"}, ["train.label_smoothing.factor=0.2,0.1",
                                             "weights.scheme=none,effective-number"])
    assert len(configs) == 4
    assert {c.train.label_smoothing.factor for c in configs} == {0.2, 0.1}
    assert "base-factor=0.2-scheme=none" in {c.name for c in configs}


def test_grid_axis_needs_two_values_and_valid_fields():
    with pytest.raises(ConfigError, match="at least two"):
        expand_grid({}, ["train.epochs=3"])
    with pytest.raises(ConfigError, match="weights.scheme must be one of"):
        expand_grid({}, ["weights.scheme=none,inverse"])


def test_the_seed_log_sweep_file_loads_and_groups_by_data():
    configs = load_sweep([REPO / "experiments" / "seed-log.yaml"])
    names = [c.name for c in configs]
    assert "exp09-effective-number" in names and len(names) == len(set(names))
    by_name = {c.name: c for c in configs}
    assert by_name["exp08-smooth-loss"].train.label_smoothing.mode == "loss"
    assert by_name["exp07-smooth-labels"].train.label_smoothing.mode == "labels"
    assert by_name["exp06-step-lr"].train.lr.values == [0.1, 0.01, 0.001, 0.0001]
    groups = group_by_data(configs)
    assert sorted(len(g) for g in groups) == [1, len(configs) - 1]
    assert [c.name for g in groups if len(g) == 1 for c in g] == ["exp10-clahe-wb"]


def test_shared_data_config_names_the_differing_field():
    a = config_to_params(expand_grid({"name": "a"}, ["data.clahe=true,false"])[0])
    b = config_to_params(expand_grid({"name": "b"}, ["data.clahe=true,false"])[1])
    with pytest.raises(ConfigError, match="data.clahe differs between"):
        shared_data_config([a, b])
    assert shared_data_config([a, a])["data"]["clahe"] is True


def test_a_seed_sweep_ingests_once_per_split_seed():
    from longtail.config import ingest_settings
    from longtail.ingest_plan import stratified_split

    configs = expand_grid({"name": "s"}, ["data.seed=1,2,3", "train.epochs=1,2"])
    groups = group_by_data(configs)
    assert sorted(len(g) for g in groups) == [2, 2, 2]
    for group in groups:
        assert {c.data.seed for c in group} == {ingest_settings(group[0])["seed"]}
    assert sorted(ingest_settings(g[0])["seed"] for g in groups) == [1, 2, 3]
    # The seed picks the split, so one ingest per seed is needed:
    labels = [i % 3 for i in range(60)]
    assert stratified_split(labels, 0.2, 1)[1] != stratified_split(labels, 0.2, 2)[1]
    # And one sweep pipeline refuses configs that need two ingests, whichever comes first.
    seeded, other = config_to_params(groups[0][0]), config_to_params(groups[1][0])
    unseeded = config_to_params(config_from_dict({"name": "u"}))
    for pair in ([seeded, other], [seeded, unseeded], [unseeded, seeded]):
        with pytest.raises(ConfigError, match="data.seed differs between"):
            shared_data_config(pair)
    with pytest.raises(ConfigError, match=r"data.seed must be >= 0 or null, got -1"):
        config_from_dict({"data": {"seed": -1}})


def test_train_seed_alone_still_splits_once_with_a_deprecation_warning(caplog):
    from longtail.config import ingest_settings

    configs = expand_grid({"name": "t"}, ["train.seed=4,5"])
    with caplog.at_level("WARNING"):
        groups = group_by_data(configs)
    assert [len(g) for g in groups] == [2]
    assert "differ only in train.seed" in caplog.text and "set data.seed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert ingest_settings(groups[0][0])["seed"] == 4
    assert "set data.seed instead" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # the default train.seed and an explicit data.seed say nothing
        group_by_data(expand_grid({"name": "q"}, ["data.seed=0,1"]))
        assert ingest_settings(expand_grid({"name": "d"}, ["train.epochs=1,2"])[0])["seed"] == 0
    assert caplog.text == ""


def test_duplicate_names_are_refused(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: same\n")
    with pytest.raises(ConfigError, match="repeated: same"):
        load_sweep([p, p])


def entry(name, f1, **params):
    return Entry(run_id=name, name=name, params={"name": name, **params}, macro_f1=f1, accuracy=None,
                 weighted_f1=None, epochs=None, seconds=None)


def test_leaderboard_ranks_by_macro_f1_and_finds_the_largest_effect():
    entries = [entry("a", 0.70, **{"weights.scheme": "none", "train.epochs": "3", "weights.max": "1.0"}),
               entry("b", 0.81, **{"weights.scheme": "effective-number", "train.epochs": "3", "weights.max": "3.7"}),
               entry("c", 0.75, **{"weights.scheme": "none", "train.epochs": "4"}),
               entry("d", None, **{"weights.scheme": "none", "train.epochs": "4"})]
    board = rank(entries)
    assert [e.name for e in board.entries] == ["b", "c", "a", "d"]
    assert board.knobs == ["train.epochs", "weights.scheme"], "logged facts (weights.max) are not knobs"
    knob, spread = board.largest_effect
    assert knob == "weights.scheme" and spread == pytest.approx(0.81 - (0.70 + 0.75) / 2)
    md = board.markdown()
    assert md.index("| 1 | b |") < md.index("| 2 | c |") and "`weights.scheme`" in md


def test_differing_knobs_ignore_names():
    assert differing_knobs([{"name": "a", "x": "1"}, {"name": "b", "x": "1"}]) == []
    assert largest_effect([], ["x"]) is None
    assert config_to_dict(load_sweep([REPO / "experiments" / "demo.yaml"])[0])["name"] == "demo"


def test_knobs_that_change_together_are_named_together():
    step = {"train.lr.schedule": "step", "train.lr.values": "[0.1, 0.01]"}
    poly = {"train.lr.schedule": "poly", "train.lr.values": "[]"}
    board = rank([entry("a", 0.70, **step, **{"weights.scheme": "none"}),
                  entry("b", 0.80, **poly, **{"weights.scheme": "none"}),
                  entry("c", 0.82, **poly, **{"weights.scheme": "effective-number"})])
    knob, spread = board.largest_effect
    assert knob == "train.lr.schedule + train.lr.values"
    assert spread == pytest.approx(0.81 - 0.70)


def test_the_demo_levers_sweep_adds_one_lever_per_row_to_the_demo():
    from longtail.config import flatten

    configs = {c.name: flatten(config_to_dict(c)) for c in load_sweep([REPO / "experiments" / "demo-levers.yaml"])}
    reference = configs.pop("demo")
    assert reference["train.precision"] == "auto"
    changed = {name: {k for k in flat if flat[k] != reference[k] and k != "name"} for name, flat in configs.items()}
    assert changed == {
        "ema": {"train.optimizer.ema"},
        "random-erasing": {"train.augmentation.erase"},
        "tta": {"evaluate.tta"},
        "epochs-28": {"train.epochs"},
        "weight-decay-5e-4": {"model.args.weight_decay"},
        "all": {"train.optimizer.ema", "train.augmentation.erase", "evaluate.tta", "train.epochs"},
        "all-weight-decay-5e-4": {"train.optimizer.ema", "train.augmentation.erase", "evaluate.tta", "train.epochs",
                                  "model.args.weight_decay"},
        "all-shift-tta": {"train.optimizer.ema", "train.augmentation.erase", "evaluate.tta", "train.epochs",
                          "model.args.weight_decay", "evaluate.tta_shift"},
        "all-40-epochs": {"train.optimizer.ema", "train.augmentation.erase", "evaluate.tta", "train.epochs",
                          "model.args.weight_decay", "evaluate.tta_shift"},
        "panel": {"train.optimizer.ema", "train.augmentation.erase", "train.augmentation.flip", "train.epochs",
                  "train.min_steps_per_epoch", "model.args.weight_decay", "evaluate.tta_shift"},
    }
    assert configs["all-shift-tta"]["train.epochs"] == 28 and configs["all-40-epochs"]["train.epochs"] == 40
    # The last row is the demo as it stands.
    demo = flatten(config_to_dict(load_sweep([REPO / "experiments" / "demo.yaml"])[0]))
    assert list(configs)[-1] == "panel"
    assert {k: v for k, v in configs["panel"].items() if k != "name"} == {
        k: v for k, v in demo.items() if k != "name"}
