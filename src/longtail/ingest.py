"""Raw images (folder, CSV manifest or S3 prefix) to train/val or test HDF5 splits, decoded in parallel.

Neither the decoders (OpenCV, Pillow) nor h5py are imported here at the top: ingest lists and plans
the source and starts the decoding pool first, and loads them while the pool decodes its first batches
(decode_and_write). On 2 cores that is 0.1 s of the second core's time the pool used to wait.

The listing is `sources.py`, the plan (classes kept, the stratified split) `ingest_plan.py`, and the
writes into each split file `split_sink.py`; here they are run in order, duplicates found, and the
report made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from longtail import decode_pool, decode_server, storage
from longtail.atomic_file import remove_stale_temps
from longtail.decoded_batch import channel_sums
from longtail.disk_full import check_room
from longtail.errors import DataError
from longtail.ingest_plan import IngestPlan, plan_ingest
from longtail.ingest_report import INGEST_FILE
from longtail.output_lock import output_lock
from longtail.output_paths import record_written
from longtail.pixel_settings import PixelSettings
from longtail.seed import SEED_MAX
from longtail.sources import LISTED_MAX, Rejections, RepeatedWarning, SourceFile, list_source
from longtail.split_sink import SplitSink
from longtail.storage import S3Settings

log = logging.getLogger(__name__)


def ingest(
    source: str,
    out_dir: str | Path,
    *,
    image_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    min_per_class: int = 0,
    max_classes: int | None = None,
    resize: str = "stretch",
    clahe: bool = False,
    white_balance: bool = False,
    unlabelled: bool = False,
    workers: int | None = None,
    progress: bool = False,
    s3: S3Settings | None = None,
) -> dict[str, Any]:
    """Ingest raw images into HDF5 splits: OUT/train.h5 + OUT/val.h5, or OUT/test.h5 when unlabelled.

    Classes are filtered and split on the listing; files are then decoded in `workers` processes (this
    one and a pool) and streamed, in order, into the splits. A file that fails to decode is listed in `rejected` and its
    row dropped; it never stops the run. Every split and ingest.json appears whole or not at all.

    Args:
        source: a folder of class folders, a CSV manifest (path,label), or s3://bucket/prefix of either.
        out_dir: a local folder or an s3:// prefix (written locally first, then uploaded).
        workers: decoding processes, this one included; None means os.cpu_count() from
            decode_server.POOL_MIN_FILES files on and one below; 1 decodes in this process only. The others
            start from a fork server, so a script calling ingest needs the usual
            `if __name__ == "__main__":` guard of multiprocessing code.
        progress: show a tqdm bar on stderr.
        s3: how to reach S3 (from S3Settings.from_env at the edge); None means boto3's defaults.

    Returns:
        The content of OUT/ingest.json: n_images, n_classes, class_counts, splits, rejected,
        ignored, source_fingerprint, preprocessing, seconds, images_per_second, ...

    Raises:
        DataError: bad arguments, a missing source, no images, or no image that decodes.
        StorageError: S3 unreachable after bounded retries.
    """
    if storage.is_s3(str(out_dir)):
        from longtail.splits import split_file

        with tempfile.TemporaryDirectory(prefix="longtail-ingest-") as local:
            result = ingest(
                source, local, image_size=image_size, val_fraction=val_fraction, seed=seed,
                min_per_class=min_per_class, max_classes=max_classes, resize=resize, clahe=clahe,
                white_balance=white_balance, unlabelled=unlabelled, workers=workers, progress=progress, s3=s3,
            )
            for split in result["splits"]:
                storage.write_file(Path(local) / split_file(split), storage.join(str(out_dir), split_file(split)), s3)
            storage.write_file(Path(local) / INGEST_FILE, storage.join(str(out_dir), INGEST_FILE), s3)
        return result

    started = time.perf_counter()
    settings = PixelSettings(image_size=image_size, resize=resize, clahe=clahe, white_balance=white_balance)  # type: ignore[arg-type]
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= seed <= SEED_MAX:
        raise DataError(f"--seed must be between 0 and {SEED_MAX}, got {seed}")
    # One ingest per output folder; with the lock held, a temporary file of ours older than this
    # ingest was left by one killed outright (SIGKILL), and is removed.
    with output_lock(out_dir, "ingest output folder"):
        remove_stale_temps(out_dir, older_than=time.time())
        return _ingest_locally(source, Path(out_dir), settings, started, val_fraction=val_fraction, seed=seed,
                               min_per_class=min_per_class, max_classes=max_classes, unlabelled=unlabelled,
                               workers=workers, progress=progress, s3=s3)


def _ingest_locally(source: str, out_dir: Path, settings: PixelSettings, started: float, *, val_fraction: float,
                    seed: int, min_per_class: int, max_classes: int | None, unlabelled: bool, workers: int | None,
                    progress: bool, s3: S3Settings | None) -> dict[str, Any]:
    """ingest() into a local folder whose lock the caller holds."""
    decode_server.start(workers)  # when a pool is likely, its fork server starts while the source is listed
    plan = plan_ingest(list_source(source, unlabelled=unlabelled, s3=s3), source, val_fraction=val_fraction,
                       seed=seed, min_per_class=min_per_class, max_classes=max_classes, unlabelled=unlabelled)
    written = decode_and_write(plan, Path(out_dir), settings, s3=s3, workers=workers, progress=progress,
                               fingerprint_extra={"val_fraction": val_fraction, "seed": seed,
                                                  "min_per_class": min_per_class, "max_classes": max_classes,
                                                  "unlabelled": unlabelled})
    result = ingest_report(plan, written, settings, source=source, val_fraction=val_fraction, seed=seed,
                           seconds=time.perf_counter() - started)
    storage.write_bytes(str(Path(out_dir) / INGEST_FILE), json.dumps(result, indent=2).encode())
    record_written(out_dir, output_names(unlabelled))  # last, so a re-run may replace them
    _print_summary(result, written.classes_seen)
    return result


def output_names(unlabelled: bool) -> tuple[str, ...]:
    """The files an ingest writes into its folder: the splits, then ingest.json."""
    from longtail.splits import split_file

    return (*(split_file(s) for s in (("test",) if unlabelled else ("train", "val"))), INGEST_FILE)


@dataclass
class WrittenSplits:
    """What decode_and_write put into the split files."""

    accepted: list[tuple[str, str, int, str]]  # (relative, label, size, sha256) of every decoded file
    rejected: Rejections
    split_counts: dict[str, int]
    classes_seen: dict[str, int]  # split -> classes that have rows in it
    fingerprint: str
    workers: int
    n_files: int
    duplicate_images: int = 0  # files dropped (or, unlabelled, kept) for holding an earlier file's bytes
    label_conflicts: LabelConflicts = field(default_factory=lambda: LabelConflicts(log))


def decode_and_write(plan: IngestPlan, out: Path, settings: PixelSettings, *, s3: S3Settings | None,
                     workers: int | None, progress: bool, fingerprint_extra: dict[str, Any]) -> WrittenSplits:
    """Decode the planned files in parallel and stream them, in plan order, into one split file each.

    A file that fails to decode is listed in `rejected` and its row dropped. A file with the bytes
    of an earlier one (by SHA-256, across classes and splits) under the same label is dropped with a
    warning; unlabelled, both rows stay (a test id needs its prediction). A file whose pixels equal an
    earlier one's under another label (other bytes: a re-encoded copy?) is a label conflict: both rows
    stay, with a warning, and the pair is listed in ingest.json. The split files appear whole
    (SplitWriter) once every row is in.

    Raises:
        DataError: no planned file could be decoded, or the same bytes carry two labels.
    """
    files, labels, unlabelled = plan.files, plan.labels, plan.unlabelled
    rejected = plan.listing.rejected
    accepted: list[tuple[str, str, int, str]] = []
    first_of: dict[str, SourceFile] = {}  # sha256 -> the first decoded file with those bytes
    duplicates = RepeatedWarning("duplicate images", log)
    conflicts = LabelConflicts(log)
    # Batches never straddle two splits, so each decoded block goes to one writer whole.
    per_batch = decode_pool.BATCH_FILES
    batches = [(split, rows[i : i + per_batch]) for split, rows in plan.rows.items()
               for i in range(0, len(rows), per_batch)]
    n_files = sum(len(rows) for rows in plan.rows.values())
    # The splits' pixels alone, before a file is decoded: a disk without room for them stops the ingest now.
    check_room(out / INGEST_FILE, n_files * settings.image_size ** 2 * 3, what="the splits' images")
    n_workers = decode_pool.worker_count(workers, n_files)
    with ExitStack() as stack:
        # Closed on the way out, so the pool stops even when writing fails.
        results = stack.enter_context(
            closing(decode_pool.decoded_batches([[files[r].uri for r in rows] for _, rows in batches], settings, s3, n_workers))
        )
        # h5py only now: the pool decodes its first batches meanwhile.
        from longtail.splits import SplitWriter, split_file

        sinks = {
            split: SplitSink(
                stack.enter_context(
                    SplitWriter(
                        out / split_file(split), n=len(rows), image_size=settings.image_size,
                        class_names=plan.class_names, labelled=not unlabelled, preprocessing=settings.as_dict(),
                        source_fingerprint="",
                    )
                ),
                labelled=not unlabelled,
                track_mean=split == "train",
            )
            for split, rows in plan.rows.items()
        }
        bar = stack.enter_context(_progress_bar(n_files, progress))
        for (split, rows), batch in zip(batches, results, strict=True):
            kept, keep_pixels = [], []
            decoded = iter(batch.pixel_digests)
            for row, reason, digest, size in zip(rows, batch.reasons, batch.digests, batch.sizes, strict=True):
                f = files[row]
                if reason:
                    rejected.add(f.relative, reason)
                    continue
                pixels_digest = next(decoded, None)
                if not _first_copy(first_of.setdefault(digest, f), f, unlabelled, duplicates):
                    keep_pixels.append(False)
                    continue
                if not unlabelled and pixels_digest is not None:
                    conflicts.check(pixels_digest, f)
                keep_pixels.append(True)
                kept.append(row)
                accepted.append((f.relative, f.label or "", size, digest))
            assert batch.pixels is not None  # decoded here, or a view of its slot of the pool's ring
            pixels, sums = batch.pixels, batch.channel_sums
            if not all(keep_pixels):  # a duplicate image counts once: drop its row, and its pixels from the mean
                pixels = pixels[np.asarray(keep_pixels, bool)]
                sums = channel_sums(pixels)
            sinks[split].add(pixels, [files[r].relative for r in kept], [labels[r] for r in kept] if labels else [],
                             sums)
            bar.update(len(rows))
        duplicates.summary()
        conflicts.summary()
        if not accepted:
            reasons = "; ".join(f"{r['path']}: {r['reason']}" for r in rejected.listed[:3])
            raise DataError(f"no image in {plan.source} could be decoded ({rejected.total} rejected, e.g. {reasons})")
        if "val" in sinks and not sinks["val"].written:  # round(n x fraction) is 0 for every class, or all rejected
            raise DataError(plan.why_val_is_empty())
        fingerprint = source_fingerprint(accepted, settings, extra=fingerprint_extra)
        split_counts: dict[str, int] = {}
        for split, sink in sinks.items():
            sink.finish()
            sink.writer.truncate(sink.written)
            sink.writer.set_source_fingerprint(fingerprint)
            if sink.track_mean and sink.written:
                size = settings.image_size
                sink.writer.set_mean_rgb((sink.pixel_sum / (sink.written * size * size)).tolist())
            split_counts[split] = sink.written
    return WrittenSplits(accepted=accepted, rejected=rejected, split_counts=split_counts,
                         classes_seen={split: len(sink.classes) for split, sink in sinks.items()},
                         fingerprint=fingerprint, workers=n_workers, n_files=n_files,
                         duplicate_images=duplicates.count, label_conflicts=conflicts)


class _NoBar:
    """What decode_and_write updates when no bar is shown: nothing."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(total: int, shown: bool) -> Any:
    """A tqdm bar on stderr, or, when none is shown (a container, CI, a pipe), a no-op: tqdm is then not
    imported at all, which saves 60-70 ms of a pipeline step's start."""
    if not shown:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="ingest", file=sys.stderr, smoothing=0.1)


class LabelConflicts:
    """Files whose decoded pixels equal an earlier file's under another label: each pair warned (bounded by
    RepeatedWarning) and the first LISTED_MAX listed for ingest.json.

    Equal bytes under two labels stop the ingest (_first_copy): that is one file copied. Equal pixels
    from other bytes are most likely one image saved twice (another format or compression), but two
    different images can also meet at the ingest's size (blank ones, say), so both rows stay.
    """

    def __init__(self, log: logging.Logger) -> None:
        self.first: dict[bytes, SourceFile] = {}  # pixel digest -> the first kept file with those pixels
        self.listed: list[dict[str, list[str]]] = []
        self.warnings = RepeatedWarning("label conflicts", log)

    def check(self, digest: bytes, f: SourceFile) -> None:
        """Record `f`'s pixels, and a conflict if an earlier file with the same pixels has another label."""
        first = self.first.setdefault(digest, f)
        if first.label == f.label:
            return
        one, two = sorted((first, f), key=lambda x: x.relative)
        self.warnings.warn("label conflict: %s (%r) and %s (%r) hold the same image (equal pixels, other bytes: a "
                           "re-encoded copy?); both kept, remove the wrongly labelled one", one.relative, one.label,
                           two.relative, two.label)
        if len(self.listed) < LISTED_MAX:
            self.listed.append({"paths": [one.relative, two.relative], "labels": [str(one.label), str(two.label)]})

    def summary(self) -> None:
        """One line for the conflicts not logged one by one."""
        self.warnings.summary()


def _first_copy(first: SourceFile, f: SourceFile, unlabelled: bool, duplicates: RepeatedWarning) -> bool:
    """True if `f` is to be stored: it is the first file with its bytes, or a test image (kept twice).

    Raises:
        DataError: `f` has the bytes of `first` under another label (a copied or linked class folder?).
    """
    if first is f:
        return True
    if first.label != f.label:
        one, two = sorted((first, f), key=lambda x: x.relative)
        raise DataError(
            f"{one.relative} and {two.relative} hold the same image (same bytes) under two labels, {one.label!r} "
            f"and {two.label!r}; remove one copy (a linked or copied class folder?), or it would sit in both classes"
        )
    duplicates.warn("%s holds the same image as %s%s", f.relative, first.relative,
                    " (both kept: a test id needs a prediction)" if unlabelled else "; counted once")
    return unlabelled


def ingest_report(plan: IngestPlan, written: WrittenSplits, settings: PixelSettings, *, source: str,
                  val_fraction: float, seed: int, seconds: float) -> dict[str, Any]:
    """The content of ingest.json (docs/architecture.md "ingest.json"): counts, splits, rejected and ignored files, and how it was made."""
    unlabelled = plan.unlabelled
    class_counts = Counter(label for _, label, _, _ in written.accepted) if not unlabelled else Counter()
    return {
        "source": source,
        "n_images": len(written.accepted),
        "n_classes": len(plan.class_names),
        "class_names": plan.class_names,
        "class_counts": {name: int(class_counts.get(name, 0)) for name in plan.class_names},
        "splits": written.split_counts,
        # The first sources.LISTED_MAX rejected files by name; every one counted per reason.
        "rejected": sorted(written.rejected.listed, key=lambda r: r["path"]),
        "rejected_total": written.rejected.total,
        "rejected_counts": dict(written.rejected.counts.most_common()),
        "ignored": plan.listing.ignored,
        "duplicate_rows": plan.listing.duplicates,
        "duplicate_images": written.duplicate_images,
        # Files whose pixels equal another's under another label (other bytes), the first LISTED_MAX pairs.
        "label_conflicts": written.label_conflicts.listed,
        "label_conflicts_total": written.label_conflicts.warnings.count,
        "filtered": plan.filtered,
        "source_fingerprint": written.fingerprint,
        "preprocessing": settings.as_dict(),
        "val_fraction": None if unlabelled else val_fraction,
        "seed": seed,
        "workers": written.workers,
        "seconds": round(seconds, 3),
        "images_per_second": round(written.n_files / seconds, 1) if seconds > 0 else None,
    }


def source_fingerprint(
    accepted: list[tuple[str, str, int, str]], settings: PixelSettings, extra: dict[str, Any] | None = None
) -> str:
    """SHA-256 over each accepted file's (relative path, label, size, content SHA-256), sorted, plus the settings.

    Only relative paths and bytes enter it (no mtimes, no absolute paths, no ETags), so the same
    images ingested from a folder or from S3 give the same fingerprint.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"preprocessing": settings.as_dict(), **(extra or {})}, sort_keys=True).encode())
    for relative, label, size, digest in sorted(accepted):
        h.update(f"\n{relative}\t{label}\t{size}\t{digest}".encode())
    return "sha256:" + h.hexdigest()


def _print_summary(result: dict[str, Any], classes_seen: dict[str, int]) -> None:
    """The seed log's lines (docs/seed-log.md "EXP3"): "fetched 209 classes and 108764 images in total", then one per split."""
    if "test" in result["splits"]:
        print(f"fetched {result['n_images']} unlabelled images in total")
        print(f"test data has {result['splits']['test']} samples")
    else:
        print(f"fetched {result['n_classes']} classes and {result['n_images']} images in total")
        for split, title in (("train", "training"), ("val", "validation")):
            n_classes = classes_seen[split]
            print(f"{title} data has {result['splits'][split]} samples over {n_classes} classes")
    if result["label_conflicts_total"]:
        print(f"{result['label_conflicts_total']} label conflicts: files with equal pixels under two labels, both kept "
              f"(see {INGEST_FILE})")
    if result["rejected_total"]:
        reasons = "; ".join(f"{n} {reason}" for reason, n in islice(result["rejected_counts"].items(), 3))
        more = f"; {len(result['rejected_counts']) - 3} other reasons" if len(result["rejected_counts"]) > 3 else ""
        print(f"rejected {result['rejected_total']} files: {reasons}{more} (see {INGEST_FILE})")
