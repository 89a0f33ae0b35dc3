"""Safety rule "Ownership": longtail deletes or overwrites only what it can prove it made, and one
writer at a time holds an output folder (docs/safety.md "Ownership")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from digits_training_data import write_digits_splits
from test_ingest_hostile import make_classes

from longtail.cli import main
from longtail.errors import StorageError
from longtail.ingest import ingest

TINY = {
    "name": "tiny",
    "model": {"name": "small_cnn", "args": {"width": 4}},
    "weights": {"scheme": "none"},
    "train": {"epochs": 1, "batch_size": 64, "lr": {"schedule": "constant", "initial": 0.05}},
}

# A second process holding `folder` as a longtail writer does, with a temporary file of its own in
# it, until it is told to go (a line on stdin).
HOLDER = textwrap.dedent("""
    import sys
    from longtail.atomic_file import atomic_path
    from longtail.output_lock import output_lock

    folder = sys.argv[1]
    with output_lock(folder, "test folder"), atomic_path(folder + "/train.h5") as tmp:
        tmp.write_bytes(b"rows being written")
        print(tmp, flush=True)
        sys.stdin.readline()
""")


@pytest.fixture
def holder(tmp_path: Path):
    """Start a HOLDER on a folder; yields (process, its live temporary file); tells it to go at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(folder: Path) -> tuple[subprocess.Popen[str], Path]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline().strip()
        assert line, "the holder did not start"
        return proc, Path(line)

    yield start
    for proc in procs:
        proc.communicate("go\n", timeout=30)


def write_config(tmp_path: Path, **train: object) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    return write_digits_splits(tmp_path_factory.mktemp("digits"), n_train=200, n_val=100)


# --- Temporary files: only longtail's own name pattern is ever removed ---------------------------

def test_ingest_keeps_a_users_hidden_tmp_files_and_removes_only_its_own(tmp_path: Path) -> None:
    source = make_classes(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    old = time.time() - 3600
    users = [out / ".notes.tmp", out / ".train.h5.abc12345.tmp"]  # the second only looks like ours did
    ours = out / ".val.h5.longtail-k3j_x9q2.tmp"
    for path in [*users, ours]:
        path.write_text("mine")
        os.utime(path, (old, old))
    ingest(str(source), out, workers=1)
    assert all(p.read_text() == "mine" for p in users)
    assert not ours.exists()


# --- The checkpoint layout: training removes its own files, never a folder's other content -------

@pytest.mark.slow
def test_train_leaves_what_else_a_checkpoint_dir_holds(digits, tmp_path: Path) -> None:
    ckpt = tmp_path / "mine"
    (ckpt / "backup").mkdir(parents=True)
    (ckpt / "backup" / "thesis.tex").write_text("years of work")
    (ckpt / "notes.txt").write_text("mine too")
    args = ["train", str(write_config(tmp_path)), "--train", str(digits.train_h5), "--val", str(digits.val_h5),
            "--out", str(tmp_path / "model"), "--checkpoint-dir", str(ckpt), "--no-tracking"]
    assert main(args) == 0
    assert (ckpt / "backup" / "thesis.tex").read_text() == "years of work"
    assert (ckpt / "notes.txt").read_text() == "mine too"
    assert sorted(p.name for p in (ckpt / "backup").iterdir()) == ["thesis.tex"]  # Keras' files are gone
    assert sorted(p.name for p in ckpt.iterdir()) == ["backup", "notes.txt"]


def test_train_refuses_a_checkpoint_dir_holding_its_file_names_without_its_record(digits, tmp_path: Path,
                                                                                   capsys) -> None:
    ckpt = tmp_path / "mine"
    ckpt.mkdir()
    (ckpt / "history.json").write_text('{"my": "own history"}')
    args = ["train", str(write_config(tmp_path)), "--train", str(digits.train_h5), "--val", str(digits.val_h5),
            "--out", str(tmp_path / "model"), "--checkpoint-dir", str(ckpt), "--no-tracking"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"checkpoint directory {ckpt} holds history.json but no resume.json: longtail did not write them" in err
    assert err.count("\n") == 1
    assert (ckpt / "history.json").read_text() == '{"my": "own history"}'


# --- One writer per output folder ------------------------------------------------------------------

def test_a_second_ingest_into_a_folder_in_use_is_refused_naming_the_holder(tmp_path: Path, holder,
                                                                          capsys) -> None:
    source = make_classes(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    proc, live_temp = holder(out)
    os.utime(live_temp, (time.time() - 60, time.time() - 60))  # written before the second ingest started
    assert main(["ingest", str(source), str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"longtail ingest: error: ingest output folder {out} is in use by another longtail process "
                   f"(PID {proc.pid}); wait for it to finish, or pass another folder\n")
    assert live_temp.read_bytes() == b"rows being written"  # the first writer's file is untouched
    assert not (out / "train.h5").exists()


@pytest.mark.slow
def test_a_second_train_into_a_live_model_dir_is_refused_and_the_first_finishes(digits, tmp_path: Path,
                                                                                capsys) -> None:
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "model"
    started, go = tmp_path / "started", tmp_path / "go"
    first = textwrap.dedent(f"""
        import json, pathlib, time
        import keras
        from longtail.config import config_from_dict
        from longtail.training import train

        class Pause(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                pathlib.Path({str(started)!r}).touch()
                deadline = time.monotonic() + 120
                while not pathlib.Path({str(go)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.1)

        config = config_from_dict(json.loads({json.dumps(json.dumps(TINY))}))
        result = train(config, {str(digits.train_h5)!r}, {str(digits.val_h5)!r}, {str(out)!r},
                       tracking_uri={tracking!r}, progress=False, system_metrics=False, extra_callbacks=[Pause()])
        print(result.run_id)
    """)
    proc = subprocess.Popen([sys.executable, "-c", first], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.2)
        os.environ["MLFLOW_TRACKING_URI"] = tracking
        try:
            code = main(["train", str(write_config(tmp_path)), "--train", str(digits.train_h5), "--val",
                         str(digits.val_h5), "--out", str(out)])
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert err[-1] == (f"longtail train: error: model directory {out} is in use by another longtail process "
                           f"(PID {proc.pid}); wait for it to finish, or pass another folder")
    finally:
        go.touch()
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    run = mlflow.MlflowClient(tracking_uri=tracking).get_run(stdout.split()[-1])
    assert run.info.status == "FINISHED"
    assert (out / "model.keras").is_file() and not (out / ".longtail.lock").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path, holder) -> None:
    from longtail.output_lock import LOCK_FILE, output_lock

    proc, live_temp = holder(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text() == f"{proc.pid}\n"
    proc.kill()  # SIGKILL: nothing of its own runs, the lock file stays behind
    proc.wait()
    with output_lock(tmp_path, "model directory"):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_is_one_writer_even_within_a_process_and_a_folder_it_made_goes_when_empty(tmp_path: Path) -> None:
    from longtail.output_lock import output_lock

    folder = tmp_path / "new"
    with output_lock(folder, "model directory"):
        with pytest.raises(StorageError, match=rf"model directory {folder} is in use by .* \(PID {os.getpid()}\)"):
            with output_lock(folder, "model directory"):
                pass
    assert not folder.exists()


def test_a_stale_posthoc_plot_goes_only_with_the_adjustment_training_wrote_beside_it(tmp_path: Path) -> None:
    from longtail.model_dir import ModelDir

    users, trained = ModelDir(tmp_path / "users"), ModelDir(tmp_path / "trained")
    for model_dir in (users, trained):
        model_dir.path.mkdir()
        model_dir.posthoc_plot_file.write_bytes(b"a plot")
    trained.adjustment_file.write_text("{}")
    for model_dir in (users, trained):
        model_dir.remove_adjustment()
    assert users.posthoc_plot_file.read_bytes() == b"a plot"  # no adjustment beside it: not longtail's
    assert not trained.posthoc_plot_file.exists() and not trained.adjustment_file.exists()
