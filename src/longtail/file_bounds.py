"""Size limits on the files longtail reads whole or line by line, checked from `fstat` before a byte is read.

Every config, JSON record, CSV and Keras archive is opened through `open_bounded` (or `read_bounded`):
a folder, FIFO, socket or device where a file belongs is refused in one line without blocking, and a
file over its limit is refused before it costs memory (docs/safety.md "Bounds"). Each limit is far
above what real use writes, so it only ever stops a mistake or a hostile file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from longtail.errors import LongtailError

MiB = 2**20
GiB = 2**30
# An experiment or sweep YAML (and a model directory's config.yaml): the largest in experiments/ is
# 4 KB, so 1 MiB is 250 times that; PyYAML parses 1 MiB in about a second.
CONFIG_MAX_BYTES = 1 * MiB
# A JSON or text record longtail writes beside a model, a split or a checkpoint (preprocessing.json,
# logit_adjustment.json, history.json, ingest.json, the class weights, metrics.json, report.txt):
# they grow with the classes and epochs, and a 10,000-class model's are about 1 MB; 16 MiB is 16
# times that.
RECORD_MAX_BYTES = 16 * MiB
# A submission or labels CSV: one `id,label` row per test image, under 100 bytes for real ids and
# class names; 256 MiB holds over 2.5 million rows, 17 times iNaturalist 2018's 149,394 test images.
CSV_MAX_BYTES = 256 * MiB
# An ingest manifest (`path,label`, local or on S3): 10 million rows of 100 bytes.
MANIFEST_MAX_BYTES = 1 * GiB
# One line of a manifest or a submission CSV: a path (at most PATH_MAX, 4 KiB) and a label, so 1 MiB
# is 256 times a real row; it is above the csv module's own 128 KiB field limit, whose error speaks
# first for one huge field.
CSV_LINE_MAX_CHARS = 1 * MiB
# model.keras: the registry's largest model, ResNet-50, saves to 95 MB; 4 GiB is 40 times that.
MODEL_MAX_BYTES = 4 * GiB
# Inside model.keras: its config.json and metadata.json (ResNet-50's config.json is 175 KB, so 16 MiB
# is 90 times that), what all its entries unpack to (Keras stores them uncompressed, so the model
# file's own limit), and how many entries there are (Keras writes 3, plus a layer's assets).
KERAS_JSON_MAX_BYTES = 16 * MiB
KERAS_UNPACKED_MAX_BYTES = MODEL_MAX_BYTES
KERAS_ENTRIES_MAX = 1000
# The zip directory that lists them, read before the zip module parses it: 1000 entries with names
# of up to 1 KB.
KERAS_DIRECTORY_MAX_BYTES = 1 * MiB

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What a file of this `st_mode` is, in words: 'a folder', 'a FIFO', ..., 'a regular file'."""
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), "a regular file")


def size_text(n: int) -> str:
    """A byte count for a message, rounded up to a tenth: '6 GiB', '16.1 MiB' (16 MiB and a byte), '3 KiB'."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (1024, "KiB")):
        if n >= unit:
            tenths = -(-n * 10 // unit)
            return f"{tenths // 10} {name}" if tenths % 10 == 0 else f"{tenths / 10:.1f} {name}"
    return f"{n} bytes"


def check_stat(st: os.stat_result, what: str, max_bytes: int | None,
               error: type[LongtailError] = LongtailError) -> None:
    """Refuse anything but a regular file of at most `max_bytes` (None: any size).

    Args:
        what: the file for the message, path included ("config file exp.yaml").

    Raises:
        error: "<what> is a FIFO, not a regular file: not read", or its size over the limit.
    """
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} is {file_kind(st.st_mode)}, not a regular file: not read")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} is {size_text(st.st_size)}, over the {size_text(max_bytes)} limit: not read")


def open_bounded(path: str | Path, what: str, max_bytes: int | None,
                 error: type[LongtailError] = LongtailError) -> IO[bytes] | None:
    """`path` opened for reading in binary, once `fstat` shows a regular file of at most `max_bytes`.

    Opened with O_NONBLOCK, so a FIFO is refused at once instead of waiting for a writer, and checked
    on the open file, so nothing can be swapped in between.

    Args:
        what: the file for messages, path included ("config file exp.yaml").

    Returns:
        The open file (the caller closes it), or None when nothing is at `path`.

    Raises:
        error: not a regular file, over `max_bytes`, or unreadable (no permission).
    """
    try:
        f = open(path, "rb", opener=_nonblocking)  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        return None
    except IsADirectoryError:  # open() refuses a folder before fstat can
        raise error(f"{what} is a folder, not a regular file: not read") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise error(f"{what} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    try:
        check_stat(os.fstat(f.fileno()), what, max_bytes, error)
    except BaseException:
        f.close()
        raise
    return f


def _nonblocking(path: str, flags: int) -> int:
    """open()'s opener: the same flags, with O_NONBLOCK (a FIFO opens at once, without a writer)."""
    return os.open(path, flags | os.O_NONBLOCK)


def read_bounded(path: str | Path, what: str, max_bytes: int,
                 error: type[LongtailError] = LongtailError) -> bytes | None:
    """The whole content of `path` (open_bounded's checks first), or None when nothing is at `path`.

    Raises:
        error: as open_bounded, or the file grew past `max_bytes` while it was read.
    """
    f = open_bounded(path, what, max_bytes, error)
    if f is None:
        return None
    with f:
        try:
            # As much as fstat gave (+1, to see a file that grew): read(max_bytes) would allocate the limit.
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, max_bytes) + 1)
            if len(data) > size:
                data += f.read(max_bytes + 1 - len(data))
        except OSError as e:
            raise error(f"{what} cannot be read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise error(f"{what} grew over the {size_text(max_bytes)} limit while it was read: not read")
    return data


def bounded_lines(lines: IO[str], what: str, max_chars: int = CSV_LINE_MAX_CHARS,
                  error: type[LongtailError] = LongtailError) -> Iterator[str]:
    """The lines of a text stream, each read at most `max_chars` at a time, so one endless line costs
    `max_chars` of memory, not the file's size.

    Raises:
        error: naming the line over `max_chars`.
    """
    number = 0
    while line := lines.readline(max_chars + 1):
        number += 1
        if len(line) > max_chars:
            raise error(f"{what} line {number} is over {max_chars:,} characters long: not a row of this file")
        yield line
