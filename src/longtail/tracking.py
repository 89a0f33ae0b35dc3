"""MLflow wiring: where runs go, and the run id a model directory carries between steps."""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

from longtail.preprocessing import RUN_FILE

DEFAULT_HOME = Path(".longtail")
# One bounded budget for every MLflow HTTP call: 3 tries of at most 20 s each, 1-2 s apart (about
# a minute at worst), instead of MLflow's default of 8 tries of up to 120 s with 2-128 s backoff.
CLIENT_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
_USERINFO = re.compile(r"(?<=://)([^/@:\s]+):([^/@\s]+)@")


def bound_client_retries(environ: MutableMapping[str, str]) -> None:
    """Set CLIENT_LIMITS in `environ` where not set already (call once, at the CLI or component edge)."""
    for name, value in CLIENT_LIMITS.items():
        environ.setdefault(name, value)


def redact_credentials(text: str) -> str:
    """'http://user:pass@host' -> 'http://user:***@host', wherever a URI appears in `text`."""
    return _USERINFO.sub(r"\1:***@", text)


def default_tracking_uri(home: str | Path = DEFAULT_HOME) -> str:
    """The laptop default: a SQLite store under .longtail/ (artifacts beside it in mlruns/)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def default_artifact_root(home: str | Path = DEFAULT_HOME) -> str:
    """Artifact folder used with the default SQLite store."""
    return (Path(home).resolve() / "mlruns").as_uri()


@dataclass
class RunInfo:
    """Which MLflow run a model belongs to, so evaluate/predict log into the training run."""

    tracking_uri: str
    experiment: str
    run_id: str

    def save(self, model_dir: str | Path) -> Path:
        """Write mlflow_run.json into a model directory."""
        path = Path(model_dir) / RUN_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> RunInfo | None:
        """Read mlflow_run.json, or None when the model was trained without tracking."""
        path = Path(model_dir) / RUN_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def resolve_tracking_uri(env_value: str | None, home: str | Path = DEFAULT_HOME) -> str:
    """MLFLOW_TRACKING_URI when set (read by the caller at the edge), else the SQLite default."""
    return env_value or default_tracking_uri(home)


def ensure_experiment(name: str, tracking_uri: str) -> str:
    """Get or create an MLflow experiment and return its id.

    With the SQLite default, artifacts go to .longtail/mlruns beside the database (not ./mlruns
    in whatever folder the user happens to be in); against a server, the server decides.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        artifact_location = (db.parent / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)
