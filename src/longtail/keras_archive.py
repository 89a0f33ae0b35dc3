"""A model.keras file's zip directory, checked before Keras opens it.

A .keras file is a zip archive (metadata.json, config.json, model.weights.h5). Keras reads config.json
whole and trusts the rest, and it reports a file that is no zip at all as "File not found". Here the
end-of-directory record, the directory and each entry's unpacked size are read first, from a few
kilobytes at the end of the file and without TensorFlow: a truncated file, another kind of file, or
an archive whose entries unpack to more than a model holds is one line (docs/safety.md "Bounds").
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import IO

from longtail.errors import DataError
from longtail.file_bounds import (
    KERAS_DIRECTORY_MAX_BYTES,
    KERAS_ENTRIES_MAX,
    KERAS_JSON_MAX_BYTES,
    KERAS_UNPACKED_MAX_BYTES,
    MODEL_MAX_BYTES,
    open_bounded,
    size_text,
)

# The entries Keras writes first and reads whole (json.loads), and the one that makes a zip a Keras model.
KERAS_JSON_ENTRIES = ("metadata.json", "config.json")
# The zip format's end-of-central-directory record (22 bytes and a comment of up to 65,535), and the
# zip64 locator (20 bytes just before it) and record that replace its counts in a large archive.
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_COMMENT_MAX = 65_535
_LOCATOR = struct.Struct("<4sLQL")
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_SIGNATURE = b"PK\x06\x06"
_FIX = "train the model again or restore the file"


def check_keras_archive(path: str | Path) -> None:
    """Refuse a model.keras that Keras would misreport or that would unpack to too much, before Keras runs.

    Raises:
        DataError: naming the file and what is wrong with it (not a regular file, over
            file_bounds.MODEL_MAX_BYTES, truncated or not a zip, not a Keras archive, too many entries,
            an entry over its file_bounds limit), with "train the model again".
    """
    lead = f"{path} cannot be loaded as a Keras model"
    f = open_bounded(path, f"{lead}: it", MODEL_MAX_BYTES, DataError)
    if f is None:
        raise DataError(f"{lead}: it is missing; {_FIX}")
    with f:
        entries, directory_bytes = _directory_size(f, os.fstat(f.fileno()).st_size, lead)
        if entries > KERAS_ENTRIES_MAX or directory_bytes > KERAS_DIRECTORY_MAX_BYTES:
            raise DataError(f"{lead}: its zip directory lists {entries} entries in {size_text(directory_bytes)}, "
                            f"over the {KERAS_ENTRIES_MAX} a Keras archive may hold: not read; {_FIX}")
        try:
            infos = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DataError(f"{lead}: it is truncated or damaged (not a readable zip: {e}); {_FIX}") from None
    if "config.json" not in {info.filename for info in infos}:
        raise DataError(f"{lead}: it is not a Keras archive (a zip without config.json); {_FIX}")
    for info in infos:
        limit = KERAS_JSON_MAX_BYTES if info.filename in KERAS_JSON_ENTRIES else KERAS_UNPACKED_MAX_BYTES
        if info.file_size > limit:
            raise DataError(f"{lead}: its {info.filename} unpacks to {size_text(info.file_size)}, over the "
                            f"{size_text(limit)} limit: not read; {_FIX}")
    unpacked = sum(info.file_size for info in infos)
    if unpacked > KERAS_UNPACKED_MAX_BYTES:
        raise DataError(f"{lead}: it unpacks to {size_text(unpacked)}, over the "
                        f"{size_text(KERAS_UNPACKED_MAX_BYTES)} limit: not read; {_FIX}")


def _directory_size(f: IO[bytes], size: int, lead: str) -> tuple[int, int]:
    """(entries, bytes) of the zip directory, from the end-of-directory record (zip64's where it has one).

    Raises:
        DataError: no such record (the file is truncated, or not a zip), beginning with `lead`.
    """
    tail_start = max(0, size - _END.size - _COMMENT_MAX)
    f.seek(tail_start)
    tail = f.read(size - tail_start)
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or len(tail) - at < _END.size:
        raise DataError(f"{lead}: it is truncated or not a Keras archive (no zip directory at its end); {_FIX}")
    _, _, _, _, entries, directory_bytes, _, _ = _END.unpack_from(tail, at)
    if entries != 0xFFFF and directory_bytes != 0xFFFFFFFF:
        return entries, directory_bytes
    end_at = tail_start + at
    if end_at < _LOCATOR.size:
        raise DataError(f"{lead}: it is truncated or damaged (a zip64 archive without its locator); {_FIX}")
    f.seek(end_at - _LOCATOR.size)
    signature, _, end64_at, _ = _LOCATOR.unpack(f.read(_LOCATOR.size))
    f.seek(end64_at)
    record = f.read(_END64.size)
    if signature != _LOCATOR_SIGNATURE or len(record) < _END64.size or record[:4] != _END64_SIGNATURE:
        raise DataError(f"{lead}: it is truncated or damaged (its zip64 directory record is missing); {_FIX}")
    fields = _END64.unpack(record)
    return fields[7], fields[8]
