"""Compile every longtail pipeline to the YAML you upload in the Kubeflow Pipelines UI, and the demo search
to the Katib Experiment you `kubectl apply`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kfp import compiler

from longtail.components.images import DEFAULT_REGISTRY, DEFAULT_TAG
from longtail.config import load_config
from longtail.errors import LongtailError
from longtail.katib import write_katib_experiment
from longtail.pipelines.sweep import create_sweep_pipeline
from longtail.pipelines.training import create_pipeline
from longtail.sweep_plan import load_search

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "experiments" / "demo.yaml"
DEFAULT_SEARCH = REPO / "experiments" / "demo-search.yaml"
DEFAULT_OUT = REPO / "build" / "pipelines"


DEFAULT_CHECKPOINT_PVC = "longtail-checkpoints"


def compile_all(out_dir: str | Path = DEFAULT_OUT, *, config: str | Path = DEFAULT_CONFIG,
                registry: str | None = None, tag: str | None = None,
                checkpoint_pvc: str = DEFAULT_CHECKPOINT_PVC) -> list[Path]:
    """Write one YAML per pipeline into out_dir.

    Args:
        config: the experiment whose knobs become the parameter defaults shown in the KFP UI.
        registry, tag: image registry and tag of the step images (defaults: components/images.py).
        checkpoint_pvc: the PVC (manifests/base/kfp-wiring) that keeps train checkpoints across
            pod retries; "" compiles without it.

    Returns:
        The written paths.
    """
    defaults = load_config(config)
    registry, tag = registry or DEFAULT_REGISTRY, tag or DEFAULT_TAG
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipelines = {
        "training": create_pipeline(defaults, registry=registry, tag=tag, checkpoint_pvc=checkpoint_pvc),
        "sweep": create_sweep_pipeline(defaults, registry=registry, tag=tag, checkpoint_pvc=checkpoint_pvc),
    }
    written = []
    for name, pipeline in pipelines.items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(path))
        written.append(path)
    return written


def compile_katib(out_dir: str | Path = DEFAULT_OUT, *, search: str | Path = DEFAULT_SEARCH,
                  registry: str | None = None, tag: str | None = None) -> Path:
    """Write the search file's Katib Experiment, with its trials' ConfigMap, as out_dir/katib-<name>.yaml.

    The same space `longtail tune` searches, run by Katib with the train image at `registry`/`tag`
    (longtail.katib; README "Search on the cluster").

    Returns:
        The written path.
    """
    plan = load_search(search)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_katib_experiment(plan, out / f"katib-{plan.name}.yaml", registry=registry, tag=tag)


def main(argv: list[str] | None = None) -> int:
    """`python pipelines/compile.py [--out DIR] [--config YAML] [--search YAML] [--image-registry R] [--image-tag T]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: build/pipelines)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="experiment YAML whose knobs become the parameter defaults")
    parser.add_argument("--search", default=str(DEFAULT_SEARCH),
                        help="search file written as a Katib Experiment (default: experiments/demo-search.yaml)")
    parser.add_argument("--image-registry", default=os.environ.get("LONGTAIL_IMAGE_REGISTRY"),
                        help="registry of the step images (env LONGTAIL_IMAGE_REGISTRY; default: longtail)")
    parser.add_argument("--image-tag", default=os.environ.get("LONGTAIL_IMAGE_TAG"),
                        help="tag of the step images (env LONGTAIL_IMAGE_TAG; default: the package version)")
    parser.add_argument("--checkpoint-pvc", default=DEFAULT_CHECKPOINT_PVC,
                        help="PVC for train checkpoints, so a retried train pod resumes "
                             f"(default: {DEFAULT_CHECKPOINT_PVC}; '' to compile without)")
    args = parser.parse_args(argv)
    try:
        paths = compile_all(args.out, config=args.config, registry=args.image_registry, tag=args.image_tag,
                            checkpoint_pvc=args.checkpoint_pvc)
        katib = compile_katib(args.out, search=args.search, registry=args.image_registry, tag=args.image_tag)
    except LongtailError as e:
        print(f"compile: error: {e}", file=sys.stderr)
        return 2
    print(f"compiled {len(paths)} pipeline(s) into {Path(args.out).resolve()}:")
    for p in paths:
        print(f"  {p.name}  (upload in the Kubeflow Pipelines UI: Pipelines → Upload pipeline)")
    print(f"  {katib.name}  (Katib Experiment: kubectl apply -f {katib.name}, after ingesting the splits it names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
