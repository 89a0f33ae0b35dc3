"""Raw images (folder, CSV manifest or S3 prefix) to train/val or test HDF5 splits, decoded in parallel.

Neither the decoders (OpenCV, Pillow) nor h5py are imported here at the top: ingest lists and plans
the source and starts the decoding pool first, and loads them while the pool decodes its first batches
(decode_and_write). On 2 cores that is 0.1 s of the second core's time the pool used to wait.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import posixpath
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from longtail import decode_pool, decode_server, storage
from longtail.atomic_file import remove_stale_temps
from longtail.errors import DataError
from longtail.ingest_report import INGEST_FILE
from longtail.output_lock import output_lock
from longtail.pixel_settings import PixelSettings, is_image_name
from longtail.seed import SEED_MAX
from longtail.storage import S3Settings

if TYPE_CHECKING:
    from longtail.splits import SplitWriter

log = logging.getLogger(__name__)

# Rows gathered before each HDF5 write: 16 chunks of 64, so every write fills whole chunks.
FLUSH_ROWS = 1024
# ingest.json names this many rejected files (and repeated rows, and duplicate images in the log);
# beyond it they are only counted, so a million missing files make a report of kilobytes.
LISTED_MAX = 100
# A manifest on S3 is read whole (a local one is streamed): 10 million rows of 100 bytes.
MANIFEST_MAX_BYTES = 2**30


@dataclass
class Rejections:
    """Rejected files, bounded: the first LISTED_MAX as {path, reason}, every one counted per reason."""

    listed: list[dict[str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, path: str, reason: str) -> None:
        """Count a rejected file, and name it while fewer than LISTED_MAX are named."""
        self.counts[reason] += 1
        if len(self.listed) < LISTED_MAX:
            self.listed.append({"path": path, "reason": reason})

    @property
    def total(self) -> int:
        """Every rejected file, named or not."""
        return sum(self.counts.values())


class RepeatedWarning:
    """One log line per case for the first LISTED_MAX cases, then a count (summary() says how many more)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def warn(self, msg: str, *args: Any) -> None:
        """Log `msg` unless LISTED_MAX lines of this kind were logged already; count it either way."""
        self.count += 1
        if self.count <= LISTED_MAX:
            log.warning(msg, *args)

    def summary(self) -> None:
        """One line for the cases not logged one by one."""
        if self.count > LISTED_MAX:
            log.warning("... and %d more %s (%d in all)", self.count - LISTED_MAX, self.what, self.count)


@dataclass(frozen=True)
class SourceFile:
    """One candidate image: where to read it, its id (path relative to SOURCE) and its label."""

    uri: str
    relative: str
    label: str | None


@dataclass
class Listing:
    """What a SOURCE holds before anything is decoded."""

    files: list[SourceFile]
    ignored: int = 0
    rejected: Rejections = field(default_factory=Rejections)
    loose_images: int = 0  # images directly in a labelled folder's root (no class folder)
    duplicates: int = 0  # manifest rows repeating an earlier row (same path, same label)


def _hidden(relative: str) -> bool:
    """True if any part of a relative path starts with a dot (a hidden file, or one in a hidden folder)."""
    return relative.startswith(".") or "/." in relative


def list_source(source: str, *, unlabelled: bool = False, s3: S3Settings | None = None) -> Listing:
    """List the candidate images of a SOURCE: a folder of class folders, a CSV manifest, or an
    s3:// prefix of either. Hidden files and files without an image extension are counted as ignored.

    Raises:
        DataError: the SOURCE does not exist or a manifest is malformed.
        StorageError: the S3 endpoint or bucket cannot be reached.
    """
    if source.lower().endswith(".csv"):
        return _list_manifest(source, unlabelled=unlabelled, s3=s3)
    if not storage.is_s3(source) and not Path(source).is_dir():
        raise DataError(
            f"ingest source not found: {source} (expected a folder of class folders, a CSV manifest "
            "path,label or an s3://bucket/prefix)"
        )
    listing = Listing(files=[])
    labels: dict[str, str] = {}  # one string per label, shared by every file of the class
    for f in storage.list_files(source, s3):
        if _hidden(f.relative) or not is_image_name(f.relative):
            listing.ignored += 1
            continue
        if f.refused:
            listing.rejected.add(f.relative, f.refused)
            continue
        slash = f.relative.find("/")
        if unlabelled:
            listing.files.append(SourceFile(f.uri, f.relative, None))
        elif slash < 0:
            listing.ignored += 1
            listing.loose_images += 1
        else:
            listing.files.append(SourceFile(f.uri, f.relative, labels.setdefault(label := f.relative[:slash], label)))
    return listing


def _manifest_lines(source: str, s3: S3Settings | None) -> Iterator[str]:
    """A manifest's lines: streamed from a local file (a regular file only), whole from S3."""
    try:
        if storage.is_s3(source):
            text = storage.read_bytes(source, s3, max_bytes=MANIFEST_MAX_BYTES).decode("utf-8-sig")
            yield from io.StringIO(text, newline="")
            return
        if not Path(source).is_file():
            storage.read_bytes(source, max_bytes=0)  # raises: not found, or not a regular file (a FIFO)
        with open(source, encoding="utf-8-sig", newline="") as f:
            yield from f
    except storage.ObjectNotFound:
        raise DataError(f"ingest manifest not found: {source}") from None
    except storage.ReadRefused as e:
        raise DataError(f"ingest manifest {source}: {e}") from None
    except UnicodeDecodeError:
        raise DataError(f"manifest {source} is not UTF-8 text") from None


def _list_manifest(source: str, *, unlabelled: bool, s3: S3Settings | None) -> Listing:
    """Rows of a CSV manifest, paths relative to the CSV's folder; rows whose file is missing are rejected."""
    try:
        return _read_manifest(source, unlabelled=unlabelled, s3=s3)
    except csv.Error as e:  # a field over csv.field_size_limit(), a NUL byte
        raise DataError(f"manifest {source} is not a valid CSV: {e}") from None


def _read_manifest(source: str, *, unlabelled: bool, s3: S3Settings | None) -> Listing:
    reader = csv.DictReader(_manifest_lines(source, s3))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    if "path" not in columns:
        raise DataError(f"manifest {source} needs a header with a 'path' column, found {columns}")
    if not unlabelled and "label" not in columns:
        raise DataError(f"manifest {source} has no 'label' column; add path,label or pass --unlabelled")
    base = source.rsplit("/", 1)[0] if storage.is_s3(source) else str(Path(source).parent)
    # S3: one listing of the prefix. Local: only the files the rows name are looked at, so a
    # manifest beside unrelated trees (or a symlink loop) costs nothing.
    present = {f.relative: f for f in storage.list_files(base, s3)} if storage.is_s3(source) else None
    listing = Listing(files=[])
    repeats = RepeatedWarning("repeated manifest rows")
    labels: dict[str, str] = {}  # one string per label, shared by every row naming it
    first_row: dict[str, tuple[int, str | None]] = {}  # normalised path -> (line, label) of its first row
    for line, row in enumerate(reader, start=2):
        path = row.get("path") or ""
        if "\x00" in path:
            raise DataError(f"manifest {source} line {line}: the path holds a NUL byte")
        relative = posixpath.normpath(path.strip().replace("\\", "/"))
        if relative in ("", ".") or relative == ".." or relative.startswith("../") or relative.startswith("/"):
            raise DataError(f"manifest {source} line {line}: path {row.get('path')!r} must be relative to the CSV's folder")
        label = None if unlabelled else labels.setdefault(text := (row.get("label") or "").strip(), text)
        if label == "":
            raise DataError(f"manifest {source} line {line}: {relative} has no label")
        if _hidden(relative) or not is_image_name(relative):
            listing.ignored += 1
            continue
        # Rows of missing files are counted, never kept: a million of them cost no memory.
        found = present.get(relative) if present is not None else storage.find_file(base, relative)
        if found is None:
            listing.rejected.add(relative, "listed in the manifest but not found")
            continue
        if found.refused:
            listing.rejected.add(relative, found.refused)
            continue
        if relative in first_row:
            first_line, first_label = first_row[relative]
            if first_label != label:
                raise DataError(
                    f"manifest {source} lines {first_line} and {line} give {relative} two labels "
                    f"({first_label!r} and {label!r}); keep one row per file"
                )
            repeats.warn("manifest %s line %d repeats %s from line %d; counted once", source, line, relative,
                         first_line)
            listing.duplicates += 1
            continue
        first_row[relative] = (line, label)
        listing.files.append(SourceFile(found.uri, relative, label))
    repeats.summary()
    return listing


def select_classes(counts: dict[str, int], *, min_per_class: int = 0, max_classes: int | None = None) -> list[str]:
    """The classes kept: at least `min_per_class` images, then the `max_classes` largest (ties by name).

    Returns:
        Kept class names, sorted (the index of each is its label).
    """
    if min_per_class < 0:
        raise DataError(f"--min-per-class must be >= 0, got {min_per_class}")
    if max_classes is not None and max_classes < 1:
        raise DataError(f"--max-classes must be >= 1, got {max_classes}")
    kept = [c for c, n in counts.items() if n >= min_per_class]
    if max_classes is not None:
        kept = sorted(kept, key=lambda c: (-counts[c], c))[:max_classes]
    return sorted(kept)


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, val), each class split in the same proportion, rows shuffled (seeded).

    Each class gives round(n * val_fraction) rows to val, but always keeps one for train. Rows are
    shuffled so any contiguous slice of a split mixes classes (chunked reads stay representative).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        rows = np.asarray(by_class[label])[rng.permutation(len(by_class[label]))]
        n_val = min(int(round(len(rows) * val_fraction)), len(rows) - 1)
        val.extend(rows[:n_val].tolist())
        train.extend(rows[n_val:].tolist())
    return [train[i] for i in rng.permutation(len(train))], [val[i] for i in rng.permutation(len(val))]


@dataclass
class _SplitSink:
    """Streams the decoded rows of one split into its file.

    Images go to the file a whole chunk at a time as they come: a block that starts on a chunk
    boundary is written straight from where it lies (a view of the pool's shared memory, reused once
    add returns), and rows that come in pieces (after a rejected file) are gathered into one chunk
    first. Ids and labels are written FLUSH_ROWS at a time.
    """

    writer: SplitWriter
    labelled: bool
    track_mean: bool
    images_done: int = 0  # rows whose images are in the file: a multiple of the chunk rows until finish()
    chunk: np.ndarray | None = None  # rows [images_done, images_done + staged) wait here for a whole chunk
    staged: int = 0
    ids_done: int = 0
    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    pixel_sum: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float64))
    classes: set[int] = field(default_factory=set)

    @property
    def written(self) -> int:
        """Rows added: those whose images are in the file and those gathered for the next chunk."""
        return self.images_done + self.staged

    def add(self, block: np.ndarray, ids: list[str], labels: list[int], channel_sums: np.ndarray) -> None:
        """Add rows (a block of images, their ids and labels); the block is not kept after this returns.

        channel_sums: the block's per-channel pixel sums (the worker took them), for the mean.
        """
        if not len(block):
            return
        if self.track_mean:
            self.pixel_sum += channel_sums
        self._add_images(block)
        self.ids.extend(ids)
        if self.labelled:
            self.labels.extend(labels)
            self.classes.update(labels)
        if len(self.ids) >= FLUSH_ROWS:
            self._write_ids()

    def _add_images(self, block: np.ndarray) -> None:
        rows = self.writer.chunk_rows
        i = 0
        if not self.staged:  # on a chunk boundary: the block's whole chunks go straight to the file
            i = len(block) // rows * rows
            if i:
                self.writer.write_images(self.images_done, block[:i])
                self.images_done += i
        if i == len(block):
            return
        if self.chunk is None:
            self.chunk = np.empty((rows, *block.shape[1:]), dtype=np.uint8)
        while i < len(block):
            take = min(rows - self.staged, len(block) - i)
            self.chunk[self.staged : self.staged + take] = block[i : i + take]
            self.staged, i = self.staged + take, i + take
            if self.staged == rows:
                self.writer.write_images(self.images_done, self.chunk)
                self.images_done, self.staged = self.images_done + rows, 0

    def _write_ids(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int32) if self.labelled else None
        self.writer.write_ids(self.ids_done, self.ids, labels)
        self.ids_done += len(self.ids)
        self.ids, self.labels = [], []

    def finish(self) -> None:
        """Write what is still gathered: the last, partial chunk of images, and the last ids and labels."""
        if self.staged and self.chunk is not None:
            self.writer.write_images(self.images_done, self.chunk[: self.staged])
            self.images_done, self.staged = self.images_done + self.staged, 0
        self._write_ids()


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
    _print_summary(result, written.classes_seen)
    return result


@dataclass
class IngestPlan:
    """Which files go to which split, in which row order, with which label, before anything is decoded."""

    source: str
    listing: Listing
    unlabelled: bool
    files: list[SourceFile]
    class_names: list[str]
    labels: list[int]  # by index into `files`; empty when unlabelled
    rows: dict[str, list[int]]  # split -> indices into `files`
    filtered: dict[str, int]  # classes and images left out by --min-per-class / --max-classes


def plan_ingest(listing: Listing, source: str, *, val_fraction: float, seed: int, min_per_class: int,
                max_classes: int | None, unlabelled: bool) -> IngestPlan:
    """Choose the classes and split the files stratified by class (or all into test when unlabelled).

    Raises:
        DataError: no images, no class with enough images, or only one class kept.
    """
    if not listing.files:
        hint = (
            f"; {listing.loose_images} images lie directly in it, not in class folders "
            "(use --unlabelled for a flat test folder)"
            if listing.loose_images
            else ""
        )
        refused = listing.rejected
        if refused.total:
            reason, n = refused.counts.most_common(1)[0]
            hint += f"; {refused.total} rejected, {n} of them {reason}, e.g. {refused.listed[0]['path']}"
        raise DataError(f"no images found in {source} ({listing.ignored} files ignored){hint}")
    if unlabelled:
        return IngestPlan(source, listing, True, listing.files, [], [], {"test": list(range(len(listing.files)))},
                          {"classes": 0, "images": 0})
    counts = Counter(f.label for f in listing.files)
    class_names = select_classes(dict(counts), min_per_class=min_per_class, max_classes=max_classes)  # type: ignore[arg-type]
    if not class_names:
        raise DataError(
            f"no class of {source} has --min-per-class {min_per_class} images (largest has {max(counts.values())})"
        )
    if len(class_names) == 1:
        raise DataError(
            f"only one class ({class_names[0]!r}) of {source} is kept, and a classifier needs at least two "
            "(one class trains to a meaningless macro-F1 of 1.0); add class folders or lower --min-per-class"
        )
    index = {name: i for i, name in enumerate(class_names)}
    files = [f for f in listing.files if f.label in index]
    labels = [index[f.label] for f in files]  # type: ignore[index]
    train_rows, val_rows = stratified_split(labels, val_fraction, seed)
    filtered = {"classes": len(counts) - len(class_names), "images": len(listing.files) - len(files)}
    return IngestPlan(source, listing, False, files, class_names, labels, {"train": train_rows, "val": val_rows},
                      filtered)


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


def decode_and_write(plan: IngestPlan, out: Path, settings: PixelSettings, *, s3: S3Settings | None,
                     workers: int | None, progress: bool, fingerprint_extra: dict[str, Any]) -> WrittenSplits:
    """Decode the planned files in parallel and stream them, in plan order, into one split file each.

    A file that fails to decode is listed in `rejected` and its row dropped. A file with the bytes
    of an earlier one (by SHA-256, across classes and splits) under the same label is dropped with a
    warning; unlabelled, both rows stay (a test id needs its prediction). The split files appear
    whole (SplitWriter) once every row is in.

    Raises:
        DataError: no planned file could be decoded, or the same bytes carry two labels.
    """
    files, labels, unlabelled = plan.files, plan.labels, plan.unlabelled
    rejected = plan.listing.rejected
    accepted: list[tuple[str, str, int, str]] = []
    first_of: dict[str, SourceFile] = {}  # sha256 -> the first decoded file with those bytes
    duplicates = RepeatedWarning("duplicate images")
    # Batches never straddle two splits, so each decoded block goes to one writer whole.
    per_batch = decode_pool.BATCH_FILES
    batches = [(split, rows[i : i + per_batch]) for split, rows in plan.rows.items()
               for i in range(0, len(rows), per_batch)]
    n_files = sum(len(rows) for rows in plan.rows.values())
    n_workers = decode_pool.worker_count(workers, n_files)
    with ExitStack() as stack:
        # Closed on the way out, so the pool stops even when writing fails.
        results = stack.enter_context(
            closing(decode_pool.decoded_batches([[files[r].uri for r in rows] for _, rows in batches], settings, s3, n_workers))
        )
        # h5py only now: the pool decodes its first batches meanwhile.
        from longtail.splits import SplitWriter, split_file

        sinks = {
            split: _SplitSink(
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
            for row, reason, digest, size in zip(rows, batch.reasons, batch.digests, batch.sizes, strict=True):
                f = files[row]
                if reason:
                    rejected.add(f.relative, reason)
                    continue
                if not _first_copy(first_of.setdefault(digest, f), f, unlabelled, duplicates):
                    keep_pixels.append(False)
                    continue
                keep_pixels.append(True)
                kept.append(row)
                accepted.append((f.relative, f.label or "", size, digest))
            assert batch.pixels is not None  # decoded here, or a view of its slot of the pool's ring
            pixels, sums = batch.pixels, batch.channel_sums
            if not all(keep_pixels):  # a duplicate image counts once: drop its row, and its pixels from the mean
                pixels = pixels[np.asarray(keep_pixels, bool)]
                sums = decode_pool.channel_sums(pixels)
            sinks[split].add(pixels, [files[r].relative for r in kept], [labels[r] for r in kept] if labels else [],
                             sums)
            bar.update(len(rows))
        duplicates.summary()
        if not accepted:
            reasons = "; ".join(f"{r['path']}: {r['reason']}" for r in rejected.listed[:3])
            raise DataError(f"no image in {plan.source} could be decoded ({rejected.total} rejected, e.g. {reasons})")
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
                         duplicate_images=duplicates.count)


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
        # The first LISTED_MAX rejected files by name; every one counted per reason.
        "rejected": sorted(written.rejected.listed, key=lambda r: r["path"]),
        "rejected_total": written.rejected.total,
        "rejected_counts": dict(written.rejected.counts.most_common()),
        "ignored": plan.listing.ignored,
        "duplicate_rows": plan.listing.duplicates,
        "duplicate_images": written.duplicate_images,
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
    """The seed log's lines: "fetched 209 classes and 108764 images in total", then one per split."""
    if "test" in result["splits"]:
        print(f"fetched {result['n_images']} unlabelled images in total")
        print(f"test data has {result['splits']['test']} samples")
    else:
        print(f"fetched {result['n_classes']} classes and {result['n_images']} images in total")
        for split, title in (("train", "training"), ("val", "validation")):
            n_classes = classes_seen[split]
            print(f"{title} data has {result['splits'][split]} samples over {n_classes} classes")
    if result["rejected_total"]:
        reasons = "; ".join(f"{n} {reason}" for reason, n in islice(result["rejected_counts"].items(), 3))
        more = f"; {len(result['rejected_counts']) - 3} other reasons" if len(result["rejected_counts"]) > 3 else ""
        print(f"rejected {result['rejected_total']} files: {reasons}{more} (see {INGEST_FILE})")
