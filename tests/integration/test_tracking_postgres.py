"""MLflow as production runs it: a tracking server on PostgreSQL taking trainings that log at once.

PostgreSQL is the `postgres` fixture: Debian's package as a cluster of the test's own
(scripts/pg-server.sh). The same concurrent trainings go to a server on SQLite too; what each store
did (the time, every run's state, the errors) is printed, for `pytest -s` or the captured output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import MlflowServer, PostgresServer, free_port
from test_train_mlflow import digits_lt_splits

from longtail.credentials import split_userinfo

pytestmark = pytest.mark.slow

# Trainings logging at once: a sweep's or a search's parallel trials.
WRITERS = 4
EPOCHS = 2
EXPERIMENT = "concurrent-writers"
REGISTERED = "concurrent-digits"


@dataclass
class Writer:
    """One `longtail train` process that ran beside the others."""

    returncode: int
    stderr: str
    model_dir: Path

    @property
    def run_id(self) -> str | None:
        run_file = self.model_dir / "mlflow_run.json"
        return json.loads(run_file.read_text())["run_id"] if run_file.is_file() else None


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return digits_lt_splits(tmp_path_factory.mktemp("splits"))


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """A seconds-long training: small_cnn on 16 px digits."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "writer", "experiment": EXPERIMENT,
        "model": {"name": "small_cnn", "args": {"width": 8}},
        "train": {"epochs": EPOCHS, "batch_size": 32, "lr": {"schedule": "constant", "initial": 0.003},
                  "optimizer": {"name": "adam"}, "jit_compile": False},
    }))
    return path


def train_command(config: Path, splits, out: Path, *overrides: str) -> list[str]:
    train_h5, val_h5 = splits
    sets = [a for o in overrides for a in ("--set", o)]
    return [sys.executable, "-m", "longtail.cli", "train", str(config), "--train", str(train_h5),
            "--val", str(val_h5), "--out", str(out), *sets]


def train_at_once(tracking_uri: str, config: Path, splits, root: Path) -> tuple[float, list[Writer]]:
    """WRITERS trainings started together against `tracking_uri`, the first registering its model.

    Returns:
        (seconds from the first start to the last exit, the writers).
    """
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    started = time.perf_counter()
    procs = []
    for i in range(WRITERS):
        register = ["--register-as", REGISTERED] if i == 0 else []
        cmd = train_command(config, splits, root / f"model-{i}", f"name=writer-{i}", f"train.seed={i}") + register
        procs.append((subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True), root / f"model-{i}"))
    writers = []
    for proc, out in procs:
        _, stderr = proc.communicate(timeout=600)
        writers.append(Writer(proc.returncode, stderr, out))
    return time.perf_counter() - started, writers


def finished_with_every_metric(client, writer: Writer) -> bool:
    """Whether the writer's run is FINISHED and holds every epoch of every metric its history.json has."""
    if writer.returncode != 0 or writer.run_id is None:
        return False
    if client.get_run(writer.run_id).info.status != "FINISHED":
        return False
    history = json.loads((writer.model_dir / "history.json").read_text())
    for key, values in history.items():
        steps = sorted(m.step for m in client.get_metric_history(writer.run_id, key))
        if steps != list(range(len(values))):
            return False
    return True


def error_lines(writer: Writer) -> list[str]:
    return [line for line in writer.stderr.splitlines() if line.startswith("longtail train: error:")]


def summary(store: str, seconds: float, server: MlflowServer, writers: list[Writer]) -> str:
    """One line: the time, exit codes, run states, complete runs, lock errors (trainings' and server's)."""
    client = mlflow.MlflowClient(server.url)
    states = [client.get_run(w.run_id).info.status if w.run_id else "no run" for w in writers]
    complete = sum(finished_with_every_metric(client, w) for w in writers)
    errors = [e for w in writers for e in error_lines(w)]
    locked = sum(w.stderr.count("database is locked") for w in writers)
    server_locked = server.log.read_text(errors="replace").count("database is locked")
    return (f"{store}: {WRITERS} concurrent writers in {seconds:.1f} s; exit codes "
            f"{[w.returncode for w in writers]}; run states {states}; {complete}/{WRITERS} FINISHED with every "
            f"metric; 'database is locked' {locked} times in the trainings' logs, {server_locked} in the "
            f"server's; errors: {errors or 'none'}")


@pytest.fixture(scope="module")
def postgres_mlflow(postgres: PostgresServer, tmp_path_factory):
    """An MLflow server with WRITERS workers on the PostgreSQL store, artifacts proxied to a folder."""
    root = tmp_path_factory.mktemp("mlflow-postgres")
    server = MlflowServer(root, str(root / "artifacts"), backend_store_uri=postgres.store_uri, workers=WRITERS)
    server.start(timeout=180)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_writers(postgres_mlflow, config, splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("writers-postgres")
    seconds, writers = train_at_once(postgres_mlflow.url, config, splits, root)
    print("\n" + summary("PostgreSQL", seconds, postgres_mlflow, writers))
    return writers


def test_four_trainings_log_at_once_to_a_server_on_postgres(postgres_mlflow, postgres_writers):
    client = mlflow.MlflowClient(postgres_mlflow.url)
    for w in postgres_writers:
        assert w.returncode == 0, w.stderr[-3000:]
        assert finished_with_every_metric(client, w), f"run {w.run_id}: not FINISHED with every metric"
    assert len({w.run_id for w in postgres_writers}) == WRITERS


def test_report_and_champion_on_postgres(postgres, postgres_mlflow, postgres_writers, tmp_path):
    server_env = {**os.environ, "MLFLOW_TRACKING_URI": postgres_mlflow.url}
    report = subprocess.run([sys.executable, "-m", "longtail.cli", "report", EXPERIMENT, "--out",
                             str(tmp_path / "report.md")], env=server_env, capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    for i in range(WRITERS):
        assert f"writer-{i}" in report.stdout, report.stdout[-3000:]
    # The registry's champion: the candidate the first writer registered, promoted.
    promote = subprocess.run([sys.executable, "-m", "longtail.cli", "promote", REGISTERED, "1"], env=server_env,
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert promote.returncode == 0, promote.stderr[-3000:]
    champion = mlflow.MlflowClient(postgres_mlflow.url).get_model_version_by_alias(REGISTERED, "champion")
    assert champion.run_id == postgres_writers[0].run_id

    # The same store given straight to longtail (no server): postgresql://, its password hidden everywhere.
    direct = postgres.store_uri.replace("postgresql+psycopg://", "postgresql://")
    password = split_userinfo(direct)[2]
    out = subprocess.run([sys.executable, "-m", "longtail.cli", "report", EXPERIMENT, "--out",
                          str(tmp_path / "direct.md")], env={**os.environ, "MLFLOW_TRACKING_URI": direct},
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "direct.md").read_text() == (tmp_path / "report.md").read_text()
    assert password and password not in out.stdout + out.stderr + (tmp_path / "direct.md").read_text()


def test_an_unreachable_database_is_one_line(tmp_path):
    port = free_port()
    uri = f"postgresql://longtail:SECRET-not-shown@127.0.0.1:{port}/mlflow"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "longtail.cli", "report", EXPERIMENT], capture_output=True, text=True,
                         env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=tmp_path, timeout=120)
    seconds = time.perf_counter() - started
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"longtail report: error: MLflow tracking store postgresql+psycopg://127.0.0.1:{port}/mlflow is unreachable ("
    ), out.stderr[-3000:]
    assert "SECRET-not-shown" not in out.stderr
    assert seconds < 30, f"{seconds:.0f} s: not the bounded probe"


def test_the_same_writers_against_a_server_on_sqlite(config, splits, tmp_path):
    """What SQLite does under the same load: every run FINISHED with its metrics, or a one-line error."""
    server = MlflowServer(tmp_path, str(tmp_path / "artifacts"), workers=WRITERS)
    server.start(timeout=180)
    try:
        seconds, writers = train_at_once(server.url, config, splits, tmp_path)
        client = mlflow.MlflowClient(server.url)
        print("\n" + summary("SQLite", seconds, server, writers))
        for w in writers:
            if w.returncode != 0:
                assert len(error_lines(w)) == 1 and "Traceback" not in w.stderr, w.stderr[-3000:]
            else:
                assert finished_with_every_metric(client, w), f"run {w.run_id}: FINISHED without every metric"
    finally:
        server.stop()


def test_database_killed_mid_run_is_one_line_and_a_failed_run(postgres, postgres_mlflow, config, splits, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": postgres_mlflow.url}
    cmd = train_command(config, splits, tmp_path / "model", "name=killed", "experiment=killed-store",
                        "train.epochs=500")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient(postgres_mlflow.url)
    try:
        run_id = None
        deadline = time.monotonic() + 300
        while run_id is None and time.monotonic() < deadline and proc.poll() is None:
            experiment = client.get_experiment_by_name("killed-store")
            runs = client.search_runs([experiment.experiment_id], "metrics.loss > -1") if experiment else []
            run_id = next((r.info.run_id for r in runs), None)  # an epoch is logged: the run is under way
            time.sleep(0.5)
        assert run_id, "the training never logged an epoch"
        postgres.kill()
        killed = time.perf_counter()
        time.sleep(10)  # the training meets the dead store meanwhile
        postgres.start()
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        postgres.start()
    seconds = time.perf_counter() - killed
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    print(f"\nkilled the database mid-run: exit {proc.returncode} {seconds:.1f} s later; {errors[-1] if errors else ''}")
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"longtail train: error: MLflow tracking store {postgres_mlflow.url} failed during run "
                           f"{run_id}: "), stderr[-3000:]
    assert client.get_run(run_id).info.status == "FAILED"
