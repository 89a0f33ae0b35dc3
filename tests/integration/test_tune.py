"""`longtail tune` on digits with tiny budgets: a 4-trial study with 2 at a time and median pruning, its
MLflow parent, children, params and files, the winner's YAML, and a kill mid-trial that the next run
goes on from. Real trial processes, a real Optuna journal file and a real MLflow SQLite store."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import psutil
import pytest
import yaml

from longtail.config import config_to_dict, load_config
from longtail.tracking.store import ui_hint

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# demo.yaml at a few seconds a trial: ResNet-8 at width 8 on 16 px digits, 4 epochs.
TINY_SET = {
    "model.args": {"stages": [1, 1, 1], "filters": [8, 8, 16, 32], "bottleneck": False, "weight_decay": 0.0005},
    "data.image_size": 16, "train.epochs": 4, "train.batch_size": 32, "train.optimizer.ema": 0.0,
    "train.jit_compile": False, "evaluate.min_macro_f1": 0.0, "evaluate.posthoc_tau": 0.0,
}
BAD_LR = 1.0e-05  # trains nothing in 4 epochs: below the others' median at epoch 3 (75%, past the warm-up), so pruned
# GridSampler(seed=5) visits the four values in this order (Optuna 5.1), the hopeless one last, so two
# trials have finished when it is compared with their median: the pruning is not left to timing.
GRID = [0.05, 0.1, 0.2, BAD_LR]
GRID_SEED = 5


def search_file(folder: Path, search: dict, name: str = "tiny-search") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": str(REPO / "experiments" / "demo.yaml"),
                                    "set": TINY_SET, "search": search}, sort_keys=False))
    return path


def tune(args: list[str], env: dict[str, str], **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "longtail.cli", "tune", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def journal(home: Path, study: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(home / "tune" / study / "journal.log"))
    return optuna.load_study(study_name=study, storage=optuna.storages.JournalStorage(backend))


@pytest.fixture(scope="module")
def study(digits_lt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    path = search_file(folder, {"train.lr.initial": {"choice": GRID}})
    proc = tune([str(path), "--data", str(digits_lt / "train"), "--test", str(digits_lt / "test"),
                 "--labels", str(digits_lt / "test_labels.csv"), "--trials", "4", "--parallelism", "2",
                 "--sampler", "grid", "--seed", str(GRID_SEED), "--pruner", "median", "--home", str(folder / "home"),
                 "--register-as", "digits-tuned"], env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return {"out": out, "home": folder / "home", "uri": env["MLFLOW_TRACKING_URI"], "env": env}


def test_four_trials_two_at_a_time_one_pruned_and_a_line_per_trial(study):
    trials = journal(study["home"], "tiny-search").trials
    states = {t.params["train.lr.initial"]: t.state for t in trials}
    assert len(trials) == 4 and "database is locked" not in study["out"]
    assert states[BAD_LR] == optuna.trial.TrialState.PRUNED
    # the first two are the median's start: never pruned (a good one after them may be, below their median)
    assert [t.state for t in trials[:2]] == [optuna.trial.TrialState.COMPLETE] * 2
    pruned = next(t for t in trials if t.params["train.lr.initial"] == BAD_LR)
    assert pruned.user_attrs["epochs"] == 3  # stopped before its last epoch: the first past 60% of its schedule
    assert sorted(pruned.intermediate_values) == list(range(1, 76))  # its steps: percents of the schedule
    lines = [line for line in study["out"].splitlines() if line.startswith("tune: trial ")]
    assert len(lines) == 4 and all("finished, best" in line for line in lines)
    assert any("pruned after epoch 3" in line for line in lines) and "ETA" in lines[0]
    assert "| 3 | 1e-05 | 3 | pruned |" in study["out"]  # the table: every trial, its epochs and state


def test_mlflow_holds_the_study_parent_its_trials_and_their_params(study):
    client = mlflow.MlflowClient(tracking_uri=study["uri"])
    parent = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string="tags.`longtail.study` = 'tiny-search' and tags.`longtail.sweep` = 'parent'")
    assert len(parent) == 1
    parent = parent[0]
    assert parent.data.params["search.train.lr.initial"] == "{choice: [0.05, 0.1, 0.2, 1.0e-05]}"
    assert (parent.data.params["sampler"], parent.data.params["pruner"]) == ("grid", "median")
    assert parent.data.params["prune_after_percent"] == "60"  # where the median pruner compares from
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    by_lr = {float(c.data.params["train.lr.initial"]): c for c in children}
    bad = by_lr.pop(BAD_LR)
    assert (bad.data.tags["longtail.trial_state"], bad.data.tags["longtail.stopped_epoch"]) == ("pruned", "3")
    assert bad.info.status == "KILLED" and "eval_macro_f1" not in bad.data.metrics
    complete = [r for r in by_lr.values() if r.data.tags["longtail.trial_state"] == "complete"]
    assert len(complete) >= 2
    for run in complete:
        assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["eval_macro_f1"] <= 1.0
    files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.md", "best.yaml", "optimization_history.png", "slice.png"} <= files
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in complete}
    champion = client.get_model_version_by_alias("digits-tuned", "champion")
    assert champion.run_id == parent.data.tags["best_run_id"]


def test_the_winners_yaml_reloads_as_the_best_trials_config(study):
    folder = study["home"] / "tune" / "tiny-search"
    best = load_config(folder / "best.yaml")
    best_trial = journal(study["home"], "tiny-search").best_trial
    trial_config = load_config(folder / "trials" / str(best_trial.number) / "config.yaml")
    assert {**config_to_dict(best), "name": ""} == {**config_to_dict(trial_config), "name": ""}
    assert best.train.lr.initial == best_trial.params["train.lr.initial"] and best.name == "tiny-search-best"
    assert (folder / "submission.csv").is_file() and "winner's test macro-F1: " in study["out"]


def test_report_lists_the_pruned_trial_apart(study):
    client = mlflow.MlflowClient(tracking_uri=study["uri"])
    parent = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string="tags.`longtail.study` = 'tiny-search' and tags.`longtail.sweep` = 'parent'")[0]
    out = subprocess.run([sys.executable, "-m", "longtail.cli", "report", "longtail-demo", "--out", str(study["home"] / "report.md"), "--sweep",
                          parent.info.run_id],
                         env=study["env"], text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ranked, apart = out.stdout.split("Stopped early or failed")
    assert "1e-05" not in ranked and "pruned" in apart


def test_a_killed_tune_goes_on_without_counting_a_trial_twice(digits_lt, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    path = search_file(tmp_path, {"train.lr.initial": {"loguniform": [0.05, 0.2]}}, name="killed")
    args = [str(path), "--data", str(digits_lt / "train"), "--trials", "1", "--seed", "0", "--pruner", "none",
            "--home", str(tmp_path / "home")]
    first = tune(args, env)
    log = tmp_path / "home" / "tune" / "killed" / "trials" / "0" / "trial.log"
    deadline = time.monotonic() + 300
    while not (log.is_file() and "epoch=1 val_macro_f1=" in log.read_text()):  # mid-trial: one epoch in
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.5)
    trial_processes = psutil.Process(first.pid).children()
    first.send_signal(signal.SIGKILL)
    first_out = first.communicate()[0]
    gone, alive = psutil.wait_procs(trial_processes, timeout=30)
    assert alive == []  # the trial died with its tune

    second = tune(args, env)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert "trials 0 were left running by a tune that is gone: marked failed" in out
    assert "trial 0 is the base config's own point" in first_out
    trials = journal(tmp_path / "home", "killed").trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "COMPLETE")]  # the killed one not counted
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`longtail.study` = 'killed' and tags.`longtail.trial` = '0'")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["longtail.trial_state"] == "failed"
    assert float(runs[0].data.params["train.lr.initial"]) == 0.1  # trial 0 was demo.yaml's own point


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_ui_opens_the_study_with_its_objective_and_params_in_view(study, tmp_path):
    """What a user meets: the address `tune` prints opens a runs table sorted by the objective, with it,
    its interval and the searched param as columns, in a model-training experiment (headless Chromium)."""
    from test_mlflow_ui import page_text, render
    from test_services import MlflowServer

    folder = study["uri"].removeprefix("sqlite:///")
    server = MlflowServer(Path(folder).parent, (tmp_path / "artifacts").as_uri(), s3_endpoint="")
    url = server.start(timeout=180)
    try:
        client = mlflow.MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("longtail-demo")
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        page = ui_hint(url, experiment.experiment_id, view="tiny-search")
        assert page.endswith("/runs?viewStateShareKey=tiny-search") and "runs?viewStateShareKey=tiny-search" in study["out"]
        text = page_text(render(page, tmp_path, "--dump-dom"))
    finally:
        server.stop()
    assert "Training runs" in text and "Sort: eval_macro_f1" in " ".join(text)
    for column in ("eval_macro_f1", "eval_macro_f1_low", "train.lr.initial", "longtail.trial_state"):
        assert column in text, f"{column} is not a column of the study's view"
    assert "pruned" in text and "complete" in text
