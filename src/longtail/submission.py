"""The submission CSV: ids as the competition writes them, read and written with clear errors."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from longtail.atomic_file import atomic_path, write_text
from longtail.decode import IMAGE_EXTENSIONS
from longtail.errors import DataError
from longtail.file_bounds import CSV_MAX_BYTES, bounded_lines, open_bounded, read_bounded
from longtail.storage import check_output_file

# How many offending values an error message lists before "and N more".
EXAMPLES = 5
# The pipeline's submission artifact metadata, as the Kubeflow UI shows it: how many rows it has,
# and, when the evaluation gate closed, that it is a note saying why rather than a CSV.
ROWS_KEY = "rows"
SKIPPED_KEY = "skipped"
REASON_KEY = "reason"


def submission_id(raw: str) -> str:
    """The id a submission uses for an image: no folders, no image extension.

    "test/00042.png" -> "00042"; "00042" -> "00042"; "a\\b\\c.JPG" -> "c". Only the extensions ingest
    reads as images (decode.IMAGE_EXTENSIONS) are stripped: "img.v2" keeps its dot.
    """
    name = PurePosixPath(str(raw).strip().replace("\\", "/")).name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and f".{ext.lower()}" in IMAGE_EXTENSIONS:
        return stem
    return name


def id_sort_key(ids: list[str]):
    """Sort key for submission rows: numeric order when every id is a number, else string order.

    So "2" comes before "10" for unpadded numeric ids, and the order never depends on the
    order images happened to be ingested in.
    """
    if ids and all(i.isdigit() for i in ids):
        return lambda i: (int(i), i)
    return lambda i: i


def examples(values: list[str] | set[str], n: int = EXAMPLES) -> str:
    """A few values for an error message: 'a, b, c' or 'a, b, c and 7 more'."""
    ordered = sorted(values)
    shown = ", ".join(repr(v) for v in ordered[:n])
    return shown if len(ordered) <= n else f"{shown} and {len(ordered) - n} more"


def write_submission(
    path: str | Path,
    ids: list[str],
    labels: list[str],
    *,
    id_column: str = "id",
    label_column: str = "label",
) -> Path:
    """Write `id,label` rows sorted by id, atomically (a temporary file, then a rename).

    Raises:
        DataError: two rows map to the same submission id (e.g. "a/1.png" and "b/1.png").
    """
    path = Path(path)
    if len(ids) != len(labels):
        raise DataError(f"{len(ids)} ids for {len(labels)} labels")
    if id_column == label_column:
        raise DataError(f"id column and label column must differ, both are {id_column!r}")
    dupes = {i for i, c in Counter(ids).items() if c > 1}
    if dupes:
        raise DataError(
            f"{len(dupes)} submission ids occur more than once after removing folders and extensions, "
            f"e.g. {examples(dupes)}: give test images unique file names"
        )
    key = id_sort_key(ids)
    rows = sorted(zip(ids, labels, strict=True), key=lambda r: key(r[0]))
    check_output_file(path, "submission CSV")
    with atomic_path(path, what="submission CSV", error=DataError) as tmp, \
            tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([id_column, label_column])
        writer.writerows(rows)
    return path


def read_submission(
    path: str | Path, *, id_column: str = "id", label_column: str = "label", what: str = "submission"
) -> dict[str, str]:
    """Read an `id,label` CSV into {submission id: label}.

    Args:
        what: how error messages name the file ("submission", "labels").

    Raises:
        DataError: the file is missing, not a regular file, over file_bounds.CSV_MAX_BYTES (both refused
            before it is read) or empty, has a line over file_bounds.CSV_LINE_MAX_CHARS, lacks a column,
            has no rows, or repeats an id.
    """
    path = Path(path)
    f = open_bounded(path, f"{what} CSV {path}", CSV_MAX_BYTES, DataError)
    if f is None:
        raise DataError(f"{what} CSV not found: {path}")
    try:
        with f:
            return _read_rows(f, path, id_column, label_column, what)
    except csv.Error as e:  # a field over csv.field_size_limit(), a NUL byte
        raise DataError(f"{what} CSV {path} is not a valid CSV: {e}") from None
    except UnicodeDecodeError:
        raw = read_bounded(path, f"{what} CSV {path}", CSV_MAX_BYTES, DataError) or b""
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            found = "it is UTF-16 text"
        else:
            try:
                raw.decode("utf-8")
                found = "undecodable"
            except UnicodeDecodeError as e:  # the offset in the whole file, not in a read buffer
                found = f"byte {e.start} is not UTF-8"
        raise DataError(f"{what} CSV {path} is not UTF-8 text ({found}); save it as UTF-8 (CSV UTF-8)") from None


def _read_rows(raw: IO[bytes], path: Path, id_column: str, label_column: str, what: str) -> dict[str, str]:
    """read_submission's parsing of the file it opened, line by line."""
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(bounded_lines(f, f"{what} CSV {path}", error=DataError))
        header = reader.fieldnames
        if not header:
            raise DataError(f"{what} CSV {path} is empty: expected a header '{id_column},{label_column}' and one row per image")
        header = [h.strip() for h in header]
        reader.fieldnames = header
        for col, flag in ((id_column, "--id-column"), (label_column, "--label-column")):
            if col not in header:
                raise DataError(
                    f"{what} CSV {path} has no column {col!r} (its columns: {', '.join(header)}); "
                    f"rename it or pass {flag}"
                )
        rows: dict[str, str] = {}
        dupes: Counter[str] = Counter()
        blank = 0
        for row in reader:
            raw_id = (row.get(id_column) or "").strip()
            if not raw_id:
                blank += 1
                continue
            key = submission_id(raw_id)
            if key in rows:
                dupes[key] += 1
            rows[key] = (row.get(label_column) or "").strip()
    if blank:
        raise DataError(f"{what} CSV {path} has {blank} rows with an empty {id_column!r}")
    if dupes:
        raise DataError(
            f"{what} CSV {path} has {len(dupes)} duplicate ids, e.g. {examples(set(dupes))}: each id must appear once"
        )
    if not rows:
        raise DataError(f"{what} CSV {path} has a header but no rows")
    return rows


def write_skipped_submission(path: str | Path, reason: str) -> dict[str, object]:
    """Stand in for the submission when the evaluation gate closed: a one-line note saying why, no CSV.

    The training pipeline's submission output comes from whichever branch the gate took, so the
    closed branch writes this note where the CSV would be. The note has no `id,label` header, so
    it can never be mistaken for (or scored as) an empty submission.

    Args:
        path: where the submission would have been written.
        reason: why the gate closed, as evaluate worded it (e.g. "macro-F1 0.4120 < gate 0.9000").

    Returns:
        The artifact metadata that marks it as skipped: {"skipped": True, "reason": ..., "rows": 0}.
    """
    write_text(path, f"No submission: the evaluation gate closed ({reason}).\n", what="skipped-submission note")
    return {SKIPPED_KEY: True, REASON_KEY: reason, ROWS_KEY: 0}


def is_skipped_submission(metadata: Mapping[str, object]) -> bool:
    """Whether a submission artifact's metadata marks it as the gate-closed note, not a CSV."""
    return bool(metadata.get(SKIPPED_KEY, False))
