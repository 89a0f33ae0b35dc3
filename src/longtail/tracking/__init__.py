"""Everything longtail reads from and writes to MLflow, through MlflowClient(tracking_uri=...).

- names: every metric, tag, param and artifact-folder name, defined once;
- env: the MLflow client's environment, set up where a process starts (credentials, retry limits);
- store: the tracking URI, client limits, experiments, reaching the store;
- inputs: the splits a run read, as dataset inputs;
- runs: a training's run (params, curves, the model), nested under a sweep or KFP's task run;
- model_runs: what evaluate, predict and scoring log into a model's run;
- served: the logged model's flavours (Keras, and python_function through longtail.served_model);
- sweep: a sweep's parent run (created, its children read, its best recorded; the use case is
  longtail.sweep_run); registry: registered models and aliases;
- queries: what `longtail run`/`sweep` read back after a pipeline ran.

Nothing is imported here: each caller imports the module that holds the name
(`from longtail.tracking.store import resolve_tracking_uri`), so importing one module loads only it.
Nothing here changes MLflow's global state, except `store.fluent_tracking_uri` around the two MLflow
calls that read only the global URI, which it restores.
"""
