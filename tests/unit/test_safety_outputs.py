"""Safety rule "Ownership", outputs: an output is never an input, a device or a link written through,
never inside the model directory read, and never a user's file (docs/safety.md "Ownership")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from digits_models import DigitsData, make_digits, train_model_dir
from digits_training_data import DigitsSplits, write_digits_splits
from test_ingest_hostile import make_classes

from longtail.atomic_file import is_temp_name, remove_stale_temps
from longtail.cli import main
from longtail.model_dir import MODEL_FILE
from longtail.output_paths import RECORD_FILE, record_written, recorded

TINY = {
    "name": "tiny",
    "model": {"name": "small_cnn", "args": {"width": 4}},
    "weights": {"scheme": "none"},
    "train": {"epochs": 1, "batch_size": 64, "lr": {"schedule": "constant", "initial": 0.05}},
}
NULL = os.stat("/dev/null").st_rdev  # a copy of /dev/null: a character device whose writes go nowhere


@dataclass
class World:
    """What the commands read: splits and a model trained on them, splits for training (16x16), a config,
    images (as a folder and as a manifest), and a SQLite tracking store holding one run of experiment "exp".

    All real, so that each command as it was before these checks would go on to write its output.
    """

    digits: DigitsData
    model: Path
    splits: DigitsSplits
    config: Path
    images: Path
    manifest: Path
    store: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("outputs")
    digits = make_digits(root / "digits")
    model = train_model_dir(digits, root / "model", scale="scale", epochs=1)
    config = root / "exp.yaml"
    config.write_text(json.dumps(TINY))
    images = make_classes(root / "images", per_class=3)
    manifest = root / "images.csv"
    manifest.write_text("path,label\n" + "".join(f"images/{p.parent.name}/{p.name},{p.parent.name}\n"
                                                 for p in sorted(images.rglob("*.png"))))
    store = root / "store" / "mlflow.db"
    store.parent.mkdir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    client.create_run(client.create_experiment("exp", artifact_location=str(root / "artifacts")))
    splits = write_digits_splits(root / "splits", n_train=200, n_val=100)
    return World(digits, model, splits, config, images, manifest, store)


def snapshot(path: Path) -> object:
    """What is at `path`, exactly: its kind, inode, device numbers, link target and content (a folder's, whole)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return {p.name: snapshot(p) for p in sorted(path.iterdir())}
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path), snapshot(path.resolve()) if path.exists() else None)
    content = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev, content)


# Each command with an output path: where its output goes ("file": the path given; "name": a file it
# writes into the folder given; "folder": the folder given), its argv for an output argument, and
# the input a link or a hard link there leads to.
@dataclass(frozen=True)
class Command:
    kind: str
    name: str  # the file a "name" command writes into its folder
    argv: object
    read: object = None


COMMANDS = {
    "weights": Command("file", "", lambda w, out: ["weights", str(w.digits.train_h5), str(out), "--scheme", "none"],
                       lambda w: w.digits.train_h5),
    "predict": Command("file", "", lambda w, out: ["predict", str(w.model), str(w.digits.test_h5), str(out)],
                       lambda w: w.digits.test_h5),
    "report": Command("file", "", lambda w, out: ["report", "exp", "--out", str(out)], lambda w: w.store),
    "ingest": Command("name", "train.h5", lambda w, out: ["ingest", str(w.manifest), str(out), "--workers", "1"],
                      lambda w: w.manifest),
    "train": Command("name", MODEL_FILE, lambda w, out: ["train", str(w.config), "--train", str(w.splits.train_h5),
                                                         "--val", str(w.splits.val_h5), "--out", str(out),
                                                         "--no-tracking"],
                     lambda w: w.splits.train_h5),
    "evaluate": Command("name", "metrics.json", lambda w, out: ["evaluate", str(w.model), str(w.digits.val_h5), str(out)],
                        lambda w: w.digits.val_h5),
    "data": Command("folder", "", lambda w, out: ["data", "digits-lt", str(out)]),
    "run": Command("folder", "", lambda w, out: ["run", str(w.config), "--data", str(w.images), "--home", str(out)]),
    "sweep": Command("folder", "", lambda w, out: ["sweep", str(w.config), "--data", str(w.images), "--test",
                                                   str(w.images), "--home", str(out)]),
    "tune": Command("folder", "", lambda w, out: ["tune", str(w.config), "--grid", "train.epochs=1,2", "--data",
                                                  str(w.images), "--home", str(out)]),
    "trial": Command("folder", "", lambda w, out: ["trial", str(w.config), "--train", str(w.splits.train_h5),
                                                   "--val", str(w.splits.val_h5), "--out", str(out), "--no-tracking"]),
}


def one_line_error(capsys: pytest.CaptureFixture[str], command: str, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"longtail {command}: error: ") and err.count("\n") == 1, err
    return err.strip()


def make_special(path: Path, case: str) -> None:
    if case == "device":
        os.mknod(path, stat.S_IFCHR | 0o600, NULL)
    else:
        os.mkfifo(path)


SPECIAL_CASES = [(c, case) for c in COMMANDS for case in ("device", "fifo")]


@pytest.mark.parametrize(("command", "case"), SPECIAL_CASES, ids=[f"{c}-{k}" for c, k in SPECIAL_CASES])
def test_an_output_that_is_a_device_or_fifo_is_refused_and_kept(world, tmp_path, capsys, monkeypatch,
                                                                command, case) -> None:
    if case == "device" and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world.store}")
    cmd = COMMANDS[command]
    folder = tmp_path / "out"
    if cmd.kind == "name":
        folder.mkdir()
        target, out = folder / cmd.name, folder
    else:
        target = out = folder
    make_special(target, case)
    before = snapshot(target)
    err = one_line_error(capsys, command, cmd.argv(world, out))
    assert str(out) in err and cmd.name in err
    assert ("a character device" if case == "device" else "a FIFO") in err
    assert snapshot(target) == before


LINKED = [c for c, cmd in COMMANDS.items() if cmd.read is not None]
LINK_CASES = [(c, case) for c in LINKED for case in ("hard link", "link")]


@pytest.mark.parametrize(("command", "case"), LINK_CASES, ids=[f"{c}-{k.replace(' ', '')}" for c, k in LINK_CASES])
def test_an_output_that_is_a_link_to_an_input_is_refused_and_both_kept(world, tmp_path, capsys, monkeypatch,
                                                                       command, case) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world.store}")
    cmd = COMMANDS[command]
    read = cmd.read(world)
    target = tmp_path / "out" / cmd.name if cmd.kind == "name" else tmp_path / "out.csv"
    target.parent.mkdir(exist_ok=True)
    if case == "hard link":
        os.link(read, target)
    else:
        target.symlink_to(read)
    before, read_before = snapshot(target), snapshot(read)
    err = one_line_error(capsys, command, cmd.argv(world, target.parent if cmd.kind == "name" else target))
    assert f"is {'a hard link' if case == 'hard link' else 'a link'} to the " in err and str(read) in err
    assert snapshot(target) == before and snapshot(read) == read_before


def test_an_output_that_is_an_input_itself_is_refused_and_the_input_kept(world, tmp_path, capsys,
                                                                         monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world.store}")
    w, d = world, world.digits
    own = tmp_path / "m"
    own.mkdir()
    shutil.copyfile(w.config, own / "config.yaml")  # retraining from a model's own config, into that model
    cases = {
        "weights": (["weights", str(d.train_h5), str(d.train_h5), "--scheme", "none"], d.train_h5),
        "predict": (["predict", str(w.model), str(d.test_h5), str(d.test_h5)], d.test_h5),
        "report": (["report", "exp", "--out", str(w.store)], w.store),
        "ingest": (["ingest", str(w.images), str(w.images), "--workers", "1"], w.images),
        "train": (["train", str(own / "config.yaml"), "--train", str(w.splits.train_h5), "--val",
                   str(w.splits.val_h5), "--out", str(own), "--no-tracking"], own),
        "evaluate": (["evaluate", str(w.model), str(d.val_h5), str(w.model)], w.model),
        "run": (["run", str(w.config), "--data", str(w.images), "--home", str(w.images)], w.images),
        "sweep": (["sweep", str(w.config), "--data", str(w.images), "--test", str(w.images), "--home",
                   str(w.images)], w.images),
    }
    for command, (argv, read) in cases.items():
        before = snapshot(read)
        err = one_line_error(capsys, command, argv)
        assert "this command reads" in err, err
        assert snapshot(read) == before, command


def test_an_output_inside_the_model_directory_read_is_refused(world, capsys) -> None:
    before = snapshot(world.model)
    for argv in (["predict", str(world.model), str(world.digits.test_h5), str(world.model / "preprocessing.json")],
                 ["predict", str(world.model), str(world.digits.test_h5), str(world.model / "submission.csv")],
                 ["evaluate", str(world.model), str(world.digits.val_h5), str(world.model / "eval")]):
        err = one_line_error(capsys, argv[0], argv)
        assert f"inside the model directory {world.model} this command reads" in err
    assert snapshot(world.model) == before


def test_a_link_to_anything_else_is_replaced_never_followed(world, tmp_path) -> None:
    theirs = tmp_path / "theirs.json"
    theirs.write_text("a user's file")
    out = tmp_path / "weights.json"
    out.symlink_to(theirs)
    assert main(["weights", str(world.digits.train_h5), str(out), "--scheme", "none"]) == 0
    assert not out.is_symlink() and json.loads(out.read_text())["scheme"] == "none"
    assert theirs.read_text() == "a user's file"


# /dev/null and /dev/stdout themselves, where only a private copy of /dev is at risk: a mount
# namespace of its own with a tmpfs over /dev, holding a null device and the stdout link.
NAMESPACE_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, os, stat, sys
    from longtail.cli import main

    results = []
    for argv in json.loads(sys.argv[1]):
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + sys.argv[2]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        null, out = os.lstat("/dev/null"), os.lstat("/dev/stdout")
        results.append({"argv": argv, "code": code, "err": err.getvalue(),
                        "null": stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3),
                        "stdout": os.readlink("/dev/stdout") if stat.S_ISLNK(out.st_mode) else None})
    print(json.dumps(results))
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_dev_null_and_dev_stdout_are_refused_in_a_private_dev(world, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a mount namespace with its own /dev needs root")
    argvs = [cmd.argv(world, Path("/dev/null")) for cmd in COMMANDS.values()]
    argvs += [cmd.argv(world, Path("/dev/stdout")) for cmd in COMMANDS.values() if cmd.kind == "file"]
    shell = ("mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && ln -s /proc/self/fd/1 /dev/stdout "
             '&& exec "$0" -c "$1" "$2" "$3"')
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell, sys.executable,
                           NAMESPACE_SCRIPT, json.dumps(argvs), str(world.store)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == len(argvs)
    for r in results:
        assert r["code"] == 2 and r["err"].count("\n") == 1, r
        assert r["null"] and r["stdout"] == "/proc/self/fd/1", r  # the node and the link as they were
        assert "/dev/" in r["err"] and ("a character device" in r["err"] or "a stream" in r["err"]), r


# --- A user's file at one of longtail's output names --------------------------------------------

def test_a_users_model_keras_in_out_is_refused_and_kept(world, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / MODEL_FILE).write_bytes(b"my own model")
    err = one_line_error(capsys, "train", COMMANDS["train"].argv(world, out))
    assert err == (f"longtail train: error: model directory {out} holds {MODEL_FILE}, which longtail did not write; "
                   "remove it, pass another folder, or pass --force to overwrite it")
    assert (out / MODEL_FILE).read_bytes() == b"my own model"


def test_a_users_file_in_an_evaluation_folder_is_refused_and_kept(world, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    err = one_line_error(capsys, "evaluate", ["evaluate", str(world.model), str(world.digits.val_h5), str(out)])
    assert f"report folder {out} holds report.md, which longtail did not write" in err
    assert (out / "report.md").read_text() == "my notes"


def test_ingest_replaces_its_own_files_and_a_users_only_with_force(world, tmp_path, capsys) -> None:
    out = tmp_path / "splits"
    assert main(["ingest", str(world.images), str(out), "--workers", "1"]) == 0
    assert set(recorded(out)) == {"train.h5", "val.h5", "ingest.json"}
    assert main(["ingest", str(world.images), str(out), "--workers", "1"]) == 0  # its own: replaced
    (out / "val.h5").write_bytes(b"the user's own val split")
    err = one_line_error(capsys, "ingest", ["ingest", str(world.images), str(out), "--workers", "1"])
    assert "holds val.h5, which longtail did not write" in err and "--force" in err
    assert (out / "val.h5").read_bytes() == b"the user's own val split"
    assert main(["ingest", str(world.images), str(out), "--workers", "1", "--force"]) == 0
    assert (out / "val.h5").stat().st_size == recorded(out)["val.h5"] != len(b"the user's own val split")


@pytest.mark.slow
def test_train_replaces_a_linked_model_keras_never_its_target_and_reruns_into_its_own_folder(tmp_path) -> None:
    splits = write_digits_splits(tmp_path / "digits", n_train=200, n_val=100)
    config = tmp_path / "exp.yaml"
    config.write_text(json.dumps(TINY))
    out, theirs = tmp_path / "m", tmp_path / "elsewhere.keras"
    out.mkdir()
    theirs.write_bytes(b"the link's target")
    (out / MODEL_FILE).symlink_to(theirs)
    (out / "history.json").write_text("{}")  # the user's, so --force is needed
    argv = ["train", str(config), "--train", str(splits.train_h5), "--val", str(splits.val_h5), "--out", str(out),
            "--no-tracking"]
    assert main(argv) == 2
    assert main([*argv, "--force"]) == 0
    assert theirs.read_bytes() == b"the link's target"
    assert not (out / MODEL_FILE).is_symlink() and (out / MODEL_FILE).read_bytes()[:2] == b"PK"  # a Keras zip
    assert recorded(out)[MODEL_FILE] == (out / MODEL_FILE).stat().st_size
    assert not [p for p in out.iterdir() if is_temp_name(p.name)]
    assert main(argv) == 0  # longtail's own model directory: trained into again, as before


# --- The data folder: replaced only when everything in it is what longtail wrote -----------------

@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "made"
    assert main(["data", "digits-lt", str(out)]) == 0
    return out


def test_the_data_record_lists_every_file_at_its_size(made) -> None:
    files = {p.relative_to(made).as_posix(): p.stat().st_size for p in made.rglob("*")
             if p.is_file() and p.name != RECORD_FILE}
    assert recorded(made) == files and len(files) > 500


@pytest.mark.parametrize("foreign", ["mynotes.txt", "train/myimg.png", "train/0/sub/labels.txt"])
def test_data_keeps_a_folder_holding_a_users_file_and_names_it(made, tmp_path, capsys, foreign) -> None:
    out = tmp_path / "made"
    shutil.copytree(made, out, symlinks=True)
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("mine")
    before = snapshot(out)
    err = one_line_error(capsys, "data", ["data", "digits-lt", str(out)])
    assert f"it holds {foreign}, which longtail data did not write" in err
    assert snapshot(out) == before


def test_data_keeps_a_folder_whose_file_changed_size(made, tmp_path, capsys) -> None:
    out = tmp_path / "made"
    shutil.copytree(made, out, symlinks=True)
    with (out / "test_labels.csv").open("a") as f:
        f.write("99999,7\n")
    err = one_line_error(capsys, "data", ["data", "digits-lt", str(out)])
    assert "it holds test_labels.csv, which longtail data did not write" in err
    assert (out / "test_labels.csv").read_text().endswith("99999,7\n")


def test_a_bare_dataset_json_is_no_proof(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "dataset.json").write_text("{}")
    (out / "precious.txt").write_text("years of work")
    err = one_line_error(capsys, "data", ["data", "digits-lt", str(out)])
    assert err == (f"longtail data: error: {out} is not a longtail dataset folder as longtail data left it: it holds "
                   f"dataset.json, which longtail data did not write (the folder has no {RECORD_FILE}, its record); "
                   "move it out, or choose an empty or new folder")
    assert (out / "precious.txt").read_text() == "years of work" and (out / "dataset.json").read_text() == "{}"


# --- The record and the Keras temporary name -----------------------------------------------------

def test_the_record_lists_what_is_there_now(tmp_path) -> None:
    (tmp_path / "a.json").write_text("12345")
    (tmp_path / "b.png").write_text("1")
    record_written(tmp_path, ["a.json", "b.png", "missing.txt"])
    assert recorded(tmp_path) == {"a.json": 5, "b.png": 1}
    (tmp_path / "b.png").unlink()
    record_written(tmp_path, ["b.png"])
    assert recorded(tmp_path) == {"a.json": 5}
    (tmp_path / RECORD_FILE).write_text("not json")
    assert recorded(tmp_path) == {}


def test_a_keras_temporary_file_is_longtails_and_a_stale_one_goes(tmp_path) -> None:
    name = f".{MODEL_FILE}.longtail-ab_12cd3.tmp.keras"
    assert is_temp_name(name) and not is_temp_name(f".{MODEL_FILE}.bak.keras")
    (tmp_path / name).write_bytes(b"half a model")
    os.utime(tmp_path / name, (0, 0))
    assert remove_stale_temps(tmp_path, older_than=1.0) == [tmp_path / name]
