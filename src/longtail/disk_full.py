"""A full disk, said in one line: the folder that could not take the write, and how much it has free."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from longtail.errors import LongtailError, StorageError

# HDF5 reports a failed write in its message, not as the exception's errno, when the write happens
# in a flush (h5py raises RuntimeError there): "... errno = 28, error message = 'No space left on device'".
_HDF5_ERRNO = re.compile(r"errno = (\d+),")
_HDF5_FILENAME = re.compile(r"filename = '([^']*)'")
_FULL = (errno.ENOSPC, errno.EDQUOT)
# Room left free by writes that check first (check_room): what a writer still writes when it closes a
# file (HDF5's object headers, chunk index and last heap of ids; Keras' metadata). HDF5 must never meet
# a full disk itself: after one failed flush its state is broken, and the interpreter crashes at exit.
HEADROOM_BYTES = 4 * 2**20


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write refused for want of space (ENOSPC, or a disk quota: EDQUOT), as the OS
    or HDF5 says it."""
    if isinstance(error, LongtailError):
        return False
    if isinstance(error, OSError) and error.errno in _FULL:
        return True
    found = _HDF5_ERRNO.search(str(error)) if isinstance(error, OSError | RuntimeError) else None
    return found is not None and int(found.group(1)) in _FULL


def failed_path(error: BaseException) -> str | None:
    """The file a failed write names: the OSError's filename, or the one in HDF5's message."""
    name = getattr(error, "filename", None)
    if name:
        return os.fsdecode(name)
    found = _HDF5_FILENAME.search(str(error))
    return found.group(1) if found else None


def no_space_error(path: str | os.PathLike[str], error: type[LongtailError] = StorageError, *,
                   needed: int | None = None, what: str = "") -> LongtailError:
    """The one line for a full disk met while writing `path` (or `what`, into its folder): the folder,
    its free space and, when known, how much the write needs."""
    folder = _existing_folder(path)
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free"
    except OSError:
        free = "free space unknown"
    if needed is not None:
        free += f", {needed / 2**20:.0f} MB needed"
    return error(f"no space left on {folder} ({free}) writing {what or Path(path).name}; free some space there, "
                 "or write to another disk")


def check_room(path: str | os.PathLike[str], nbytes: int, error: type[LongtailError] = StorageError, *,
               what: str = "") -> None:
    """Refuse to write `nbytes` more into `path` (or `what`, into its folder) unless HEADROOM_BYTES stay
    free after it.

    Raises:
        `error` (no_space_error): the folder's disk has less room, before anything is written.
    """
    try:
        free = shutil.disk_usage(_existing_folder(path)).free
    except OSError:
        return  # the write itself will say what is wrong with the folder
    if free < nbytes + HEADROOM_BYTES:
        raise no_space_error(path, error, needed=nbytes + HEADROOM_BYTES, what=what)


def _existing_folder(path: str | os.PathLike[str]) -> Path:
    """The folder `path` is (to be) written in, or its nearest ancestor that exists."""
    folder = Path(path).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextmanager
def disk_full_as_one_line(path: str | os.PathLike[str], error: type[LongtailError] = StorageError) -> Iterator[None]:
    """Turn a full disk met inside the block, while writing `path`, into no_space_error; other errors pass."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not is_disk_full(e):
            raise
        raise no_space_error(path, error) from None
