"""The MLflow UI as a person sees it: `mlflow server` on a tiny `longtail run`'s store, rendered by headless Chromium.

Chromium is Debian's package (`apt-get install chromium`, in .ci/run). Screenshots of the runs page
(table and chart view) are kept under build/mlflow-ui/ as the test's artifacts.
"""

import html
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
from conftest import TINY_PIPELINE
from test_services import MlflowServer

from longtail.pipelines.local import run_local
from longtail.tracking.store import runs_page_url

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "mlflow-ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No network beyond 127.0.0.1, no first-run or background fetches, a fresh profile per call.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=2200,1000", "--virtual-time-budget=20000"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]


def render(url: str, tmp_path: Path, *extra: str) -> str:
    """Chromium's output for `url` (the DOM after the app's scripts ran, with --dump-dom)."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    out = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def page_text(dom: str) -> list[str]:
    """The visible text of a rendered page, one entry per text node."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S)
    return [t.strip() for t in html.unescape(re.sub(r"<[^>]+>", "\n", body)).split("\n") if t.strip()]


@pytest.fixture(scope="module")
def served(digits_lt, tmp_path_factory):
    """A one-epoch `longtail run` on digits-lt and an `mlflow server` on its store."""
    home = tmp_path_factory.mktemp("home")
    result = run_local(REPO / "experiments" / "demo.yaml", str(digits_lt / "train"), str(digits_lt / "test"),
                       labels=digits_lt / "test_labels.csv", overrides=TINY_PIPELINE + ["train.epochs=1"],
                       home=home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job-runner processes: only the UI is needed
        server = MlflowServer(home, (home / "mlruns").as_uri(), s3_endpoint="")
    url = server.start(timeout=180)
    yield result, url
    server.stop()


def test_the_run_page_shows_eval_macro_f1_and_the_datasets(served, tmp_path):
    result, url = served
    run = mlflow.MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id)
    names = [d.dataset.name for d in run.inputs.dataset_inputs]
    assert len(names) == 3 and names[0].endswith("/train")

    text = page_text(render(f"{runs_page_url(url, result.experiment_id)}/{result.run_id}", tmp_path, "--dump-dom"))
    shown = text[text.index("eval_macro_f1") + 1]
    assert float(shown) == pytest.approx(run.data.metrics["eval_macro_f1"], abs=1e-6)
    # The run page lists the first dataset with its context and folds the others into "+2".
    assert any(t.startswith(names[0]) for t in text) and "training" in text and "+2" in text
    assert "Description" in text and any("small_cnn" in t for t in text)

    runs_dom = render(runs_page_url(url, result.experiment_id), tmp_path, "--dump-dom")
    for name in names:
        assert name in runs_dom, f"dataset {name} not on the runs page"
    assert "Training runs" in page_text(runs_dom)


def test_screenshots_of_the_runs_page_are_kept(served, tmp_path):
    """The table (datasets, source, model) and the chart view (the metrics, eval_macro_f1 among them)."""
    result, url = served
    page = runs_page_url(url, result.experiment_id)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, view in (("runs-page.png", page), ("runs-page-charts.png", f"{page}?compareRunsMode=CHART")):
        (SCREENSHOTS / name).unlink(missing_ok=True)
        render(view, tmp_path, f"--screenshot={SCREENSHOTS / name}")
        assert (SCREENSHOTS / name).stat().st_size > 10_000
        print(f"MLflow UI screenshot: {SCREENSHOTS / name}")
    # On a loaded machine the chart view can miss Chromium's virtual-time budget once; a page that never
    # shows the metric still fails after three renders.
    for _ in range(3):
        charts = page_text(render(f"{page}?compareRunsMode=CHART", tmp_path, "--dump-dom"))
        if "eval_macro_f1" in charts:
            break
    assert "eval_macro_f1" in charts
