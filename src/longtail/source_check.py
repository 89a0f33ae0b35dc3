"""A local run's data and test sources checked from their listings before a step starts: reachable, listable, two classes."""

from __future__ import annotations

from collections.abc import Iterable

from longtail.config import ExperimentConfig, ingest_settings
from longtail.ingest_plan import plan_ingest
from longtail.sources import list_source
from longtail.storage import S3Settings

# The ingest settings that decide the plan (which classes are kept); the others only shape pixels.
PLAN_SETTINGS = ("val_fraction", "seed", "min_per_class", "max_classes")


def check_sources(data: str, test: str, configs: Iterable[ExperimentConfig], s3: S3Settings) -> None:
    """Raise, before any pipeline step, every error the two ingest steps would raise before decoding.

    The ingest's own listing (longtail.sources) and plan (longtail.ingest_plan): no file is read,
    so a valid run does here what its ingest steps do first, and nothing else. DATA is listed once
    and planned for each distinct data setting of `configs` (a sweep may have several); TEST is
    listed as the unlabelled test images. An S3 source costs at most the storage layer's one network
    budget per call (`s3.deadline_s`), after which the first error ends the check.

    Raises:
        DataError: a missing source, a malformed manifest, no images, or fewer than two classes kept.
        StorageError: the S3 endpoint, bucket or credentials refuse the listing, or it never answers.
    """
    listing = list_source(data, s3=s3)
    settings = {tuple(ingest_settings(c)[k] for k in PLAN_SETTINGS) for c in configs}
    for values in sorted(settings, key=repr):
        plan_ingest(listing, data, unlabelled=False, **dict(zip(PLAN_SETTINGS, values, strict=True)))
    plan_ingest(list_source(test, unlabelled=True, s3=s3), test, unlabelled=True, val_fraction=0.0, seed=0,
                min_per_class=0, max_classes=None)
