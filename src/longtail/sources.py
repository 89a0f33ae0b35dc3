"""An ingest SOURCE listed before anything is decoded: its candidate images, their ids and labels.

A SOURCE is a folder of class folders, a CSV manifest (path,label), or an s3:// prefix of either.
Rejected files and repeated warnings are bounded here too (docs/safety.md "Bounds"): the listing
and the decoding both count into them.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longtail import storage
from longtail.errors import DataError
from longtail.file_bounds import MANIFEST_MAX_BYTES, bounded_lines, open_bounded
from longtail.pixel_settings import is_image_name
from longtail.storage import S3Settings

log = logging.getLogger(__name__)

# ingest.json names this many rejected files (and repeated rows, and duplicate images in the log);
# beyond it they are only counted, so a million missing files make a report of kilobytes.
LISTED_MAX = 100
# Why the files of a class folder whose name is not UTF-8 are rejected: the folder's name is the class
# name every prediction and submission prints, and an escaped stand-in would be a label nobody gave.
NOT_UTF8_CLASS = "its class folder's name is not UTF-8: rename the folder to ingest its images"


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
    """One log line per case for the first LISTED_MAX cases, then a count (summary() says how many more).

    Args:
        what: the cases, for the summary line ("duplicate images").
        log: the logger of the module that warns, so each line names where it comes from.
    """

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self.count = 0

    def warn(self, msg: str, *args: Any) -> None:
        """Log `msg` unless LISTED_MAX lines of this kind were logged already; count it either way."""
        self.count += 1
        if self.count <= LISTED_MAX:
            self.log.warning(msg, *args)

    def summary(self) -> None:
        """One line for the cases not logged one by one."""
        if self.count > LISTED_MAX:
            self.log.warning("... and %d more %s (%d in all)", self.count - LISTED_MAX, self.what, self.count)


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
        relative = printable_id(f.relative)
        if f.refused:
            listing.rejected.add(relative, f.refused)
            continue
        slash = f.relative.find("/")
        if unlabelled:
            listing.files.append(SourceFile(f.uri, relative, None))
        elif slash < 0:
            listing.ignored += 1
            listing.loose_images += 1
        elif relative[:slash] != f.relative[:slash]:
            listing.rejected.add(relative, NOT_UTF8_CLASS)
        else:
            listing.files.append(SourceFile(f.uri, relative, labels.setdefault(label := f.relative[:slash], label)))
    return listing


def printable_id(relative: str) -> str:
    """A listed path as a file's id: itself, or, when its name is not UTF-8 (Python holds such bytes
    as surrogate escapes, which UTF-8 text cannot carry), with each such byte written `\\xNN`."""
    if relative.isascii():
        return relative
    try:
        relative.encode("utf-8")
        return relative
    except UnicodeEncodeError:
        return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _manifest_lines(source: str, s3: S3Settings | None) -> Iterator[str]:
    """A manifest's lines, each at most file_bounds.CSV_LINE_MAX_CHARS: streamed from a local file (a
    regular file within MANIFEST_MAX_BYTES, checked before it is read), whole from S3 (the same bound)."""
    what = f"ingest manifest {source}"
    try:
        if storage.is_s3(source):
            text = storage.read_bytes(source, s3, max_bytes=MANIFEST_MAX_BYTES).decode("utf-8-sig")
            yield from bounded_lines(io.StringIO(text, newline=""), what, error=DataError)
            return
        raw = open_bounded(source, what, MANIFEST_MAX_BYTES, DataError)
        if raw is None:
            raise storage.ObjectNotFound(source)
        with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
            yield from bounded_lines(f, what, error=DataError)
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
    repeats = RepeatedWarning("repeated manifest rows", log)
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
