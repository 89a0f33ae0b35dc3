"""Dataset inputs recorded by runs that start at the same moment (sweep children training in parallel)."""

import threading

import mlflow

from longtail.tracking.inputs import SplitDataset, log_datasets


def test_parallel_runs_record_the_same_datasets_without_losing_the_insert_race(tmp_path):
    """Eight runs record the same train/val datasets at once on one SQLite store (real MLflow store,
    real threads): every run ends up linked to both, and no run fails on the store's unique key."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("parallel-inputs")
    runs = [client.create_run(experiment).info.run_id for _ in range(8)]
    datasets = [SplitDataset(name=f"digits/{split}", digest=f"{split:0<32}", source_uri="/data/digits",
                             context=context, rows=100, classes=10, fingerprint="sha256:" + "0" * 64)
                for split, context in (("train", "training"), ("val", "validation"))]
    start, errors = threading.Barrier(len(runs)), []

    def record(run_id: str) -> None:
        start.wait()
        try:
            log_datasets(uri, run_id, datasets)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=record, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for run_id in runs:
        names = sorted(d.dataset.name for d in client.get_run(run_id).inputs.dataset_inputs)
        assert names == ["digits/train", "digits/val"], (run_id, names)
