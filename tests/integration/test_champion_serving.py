"""The registered champion as a plain MLflow client meets it: raw PNGs in, class names out, in Python and over
`mlflow models serve`, equal to `longtail predict`'s submission; and the README's "Use the champion" runs."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_PIPELINE, free_port

from longtail.ingest import ingest
from longtail.model_dir import ModelDir
from longtail.prediction import predict, predict_probabilities
from longtail.splits import read_ids
from longtail.submission import submission_id
from longtail.tracking.names import CHAMPION, DEFAULT_REGISTERED_MODEL
from longtail.tracking.registry import promote

REPO = Path(__file__).resolve().parents[2]
CHAMPION_URI = f"models:/{DEFAULT_REGISTERED_MODEL}@{CHAMPION}"
# As the model is evaluated: flip and shift TTA, a fixed post-hoc tau.
EVALUATED = ["train.epochs=1", "evaluate.tta=true", "evaluate.tta_shift=0.07", "evaluate.posthoc_tau=0.5"]

pytestmark = pytest.mark.slow


@dataclass
class Champion:
    """A digits run's model, registered and promoted to champion, and `longtail predict`'s view of the test PNGs."""

    tracking_uri: str
    test_pngs: Path
    submission: dict[str, str]  # id -> class name
    probabilities: dict[str, np.ndarray]  # id -> class probabilities, as predict computes them
    class_names: list[str]

    def env(self) -> dict[str, str]:
        """This environment with the store, and this venv's bin first on PATH, as an activated venv has it
        (`mlflow models serve` starts `uvicorn` by name)."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "PATH": path}


@pytest.fixture(scope="module")
def champion(digits_lt: Path, tmp_path_factory: pytest.TempPathFactory) -> Champion:
    root = tmp_path_factory.mktemp("champion")
    ingest(str(digits_lt / "train"), root / "data", image_size=16, workers=1)
    ingest(str(digits_lt / "test"), root / "test", image_size=16, unlabelled=True, workers=1)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sets = [arg for item in TINY_PIPELINE + EVALUATED for arg in ("--set", item)]
    out = subprocess.run(
        [sys.executable, "-m", "longtail.cli", "train", str(REPO / "experiments" / "demo.yaml"),
         "--train", str(root / "data" / "train.h5"), "--val", str(root / "data" / "val.h5"), "--out", str(root / "model"),
         "--register-as", DEFAULT_REGISTERED_MODEL, *sets],
        capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    promote(uri, DEFAULT_REGISTERED_MODEL, "1")
    model_dir, test_h5 = root / "model", root / "test" / "test.h5"
    predict(model_dir, test_h5, root / "submission.csv", tta=True, tta_shift=0.07, tracking_uri=uri)
    with open(root / "submission.csv") as f:
        submission = {row["id"]: row["label"] for row in csv.DictReader(f)}
    preprocessing = ModelDir(model_dir).preprocessing()
    probs = predict_probabilities(ModelDir(model_dir).load_model(), preprocessing, test_h5, tta=True, tta_shift=0.07,
                                  adjustment=ModelDir(model_dir).adjustment())
    by_id = {submission_id(i): p for i, p in zip(read_ids(test_h5), probs, strict=True)}
    return Champion(uri, digits_lt / "test", submission, by_id, preprocessing.class_names)


# A process that knows MLflow, pandas and the PNGs, and never imports longtail's CLI.
CLIENT = """
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
files = sorted(Path(sys.argv[2]).glob("*.png"))
predicted = model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))
cli = [m for m in sys.modules if m == "longtail.cli" or m.startswith("longtail.commands")]
assert not cli, cli
np.savez(sys.argv[3], ids=[f.stem for f in files], labels=predicted["label"].to_numpy(str),
         probs=predicted.drop(columns="label").to_numpy(), columns=list(predicted.columns[1:]))
"""


def test_the_champion_predicts_raw_pngs_as_longtail_predict_does(champion, tmp_path):
    out = tmp_path / "pyfunc.npz"
    run = subprocess.run([sys.executable, "-c", CLIENT, CHAMPION_URI, str(champion.test_pngs), str(out)],
                         capture_output=True, text=True, env=champion.env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(out)
    ids = list(got["ids"])
    assert sorted(ids) == sorted(champion.submission) and len(ids) == 300
    assert list(got["columns"]) == champion.class_names
    assert [champion.submission[i] for i in ids] == list(got["labels"])
    expected = np.stack([champion.probabilities[i] for i in ids])
    assert np.abs(got["probs"] - expected).max() <= 1e-5


def test_the_logged_model_keeps_the_keras_flavour_and_shows_the_served_contract(champion, tmp_path):
    import mlflow
    import yaml

    mlflow.set_tracking_uri(champion.tracking_uri)
    path = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    assert set(mlmodel["flavors"]) == {"keras", "python_function"}
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "longtail.served_model"
    inputs = json.loads(mlmodel["signature"]["inputs"])
    outputs = [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])]
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    assert outputs == ["label", *champion.class_names]
    assert (path / mlmodel["saved_input_example_info"]["artifact_path"]).is_file()
    network = mlflow.keras.load_model(CHAMPION_URI)
    assert network.output_shape == (None, len(champion.class_names))


@pytest.fixture(scope="module")
def server(champion) -> str:
    """`mlflow models serve` of the champion on a loopback port (5001, the README's, when free)."""
    port = 5001 if _free(5001) else free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", CHAMPION_URI,
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env=champion.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer /ping within 180 s")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def invoke(url: str, images: list[bytes]) -> tuple[int, dict]:
    """POST images as MLflow's JSON (dataframe_split, bytes base64) to /invocations: (status, JSON answer)."""
    body = json.dumps({"dataframe_split": {"columns": ["image"],
                                           "data": [[base64.b64encode(b).decode()] for b in images]}}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_served_champion_names_the_classes_of_two_pngs(champion, server):
    ids = ["00000", "00042"]
    status, answer = invoke(server, [(champion.test_pngs / f"{i}.png").read_bytes() for i in ids])
    assert status == 200, answer
    assert [row["label"] for row in answer["predictions"]] == [champion.submission[i] for i in ids]
    for i, row in zip(ids, answer["predictions"], strict=True):
        assert np.allclose([row[c] for c in champion.class_names], champion.probabilities[i], atol=1e-5)


def test_a_corrupt_image_is_a_one_line_error_and_the_server_stays_up(champion, server):
    png = (champion.test_pngs / "00007.png").read_bytes()
    status, answer = invoke(server, [png, png[:40] + b"\x00" * 64])
    assert status == 400, answer
    message = answer["message"]
    assert message.startswith("image 1: ") and "\n" not in message, message
    assert "stack_trace" not in answer
    status, answer = invoke(server, [png])
    assert status == 200 and answer["predictions"][0]["label"] == champion.submission["00007"]


def readme_blocks(language: str) -> list[str]:
    """The `language` code blocks of the README's "Use the champion" section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Use the champion"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_readmes_use_the_champion_example_runs_as_written(champion, server, tmp_path):
    # The example's paths, pointed at the digits run's test PNGs.
    (tmp_path / "data" / "fashion-mnist-lt").mkdir(parents=True)
    (tmp_path / "data" / "fashion-mnist-lt" / "test").symlink_to(champion.test_pngs)
    [python] = readme_blocks("python")
    run = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, cwd=tmp_path,
                         env=champion.env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    first = sorted(champion.submission)[:5]
    assert run.stdout.strip() == str([champion.submission[i] for i in first])
    # The curl line, sent to the server the fixture started in place of the README's `mlflow models serve … &`.
    [shell] = readme_blocks("bash")
    curl = shell[shell.index("curl"):shell.index("\n#")].replace("127.0.0.1:5001", server.removeprefix("http://"))
    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["predictions"][0]["label"] == champion.submission["00000"]
