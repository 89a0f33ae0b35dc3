"""The one way longtail writes a local file so it appears whole or not at all: a temporary file beside it, fsynced, then renamed."""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from longtail.disk_full import disk_full_as_one_line, is_disk_full, no_space_error
from longtail.errors import LongtailError, StorageError

# Every file longtail writes is read by other pipeline steps, other users and the MLflow server.
FILE_MODE = 0o644
# Temporary files are `.NAME.longtail-<8 random>.tmp` beside their target: a name no user file has,
# so a later run can prove a leftover one is ours before it removes it (remove_stale_temps). A writer
# that goes by the name's suffix (Keras: `.keras`) gets it repeated: `.model.keras.longtail-<8>.tmp.keras`.
TEMP_MARK = ".longtail-"
TEMP_SUFFIX = ".tmp"
# mkstemp's random part is 8 characters of [a-z0-9_].
_TEMP_NAME = re.compile(rf"\..+{re.escape(TEMP_MARK)}[a-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}(\.[A-Za-z0-9]+)?")


def is_temp_name(name: str) -> bool:
    """Whether `name` is one atomic_path gives its temporary files (and so a file longtail made)."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: str | Path, older_than: float) -> list[Path]:
    """Delete atomic_path's temporary files (`.NAME.longtail-<random>.tmp`) last modified before `older_than`.

    A writer killed outright (SIGKILL, power loss) cannot remove its temporary file; the next
    ingest into the folder does, sparing any written after it started (a writer still at work).
    Any other file, `.notes.tmp` included, is not longtail's and stays.

    Returns:
        The files removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".*{TEMP_MARK}*"):
        try:
            if (is_temp_name(path.name) and path.is_file() and not path.is_symlink()
                    and path.stat().st_mtime < older_than):
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, what: str = "",
                error: type[LongtailError] = StorageError, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside `target` to write into; on success it replaces `target`, on failure it is removed.

    The temporary file is created in the target's folder (so the rename never crosses file
    systems) with mode FILE_MODE, and fsynced before the rename, so after a crash `target` holds
    either its old content or the new one. The rename replaces whatever is at `target`, a link
    included: nothing is ever written through a link.

    Args:
        keep_suffix: end the temporary name with the target's suffix too, for a writer that insists
            on it (Keras' `model.save` on `.keras`).

    Raises:
        `error` (StorageError by default): the folder cannot take a new file, naming `what` and the path;
            or the disk is full (disk_full.no_space_error), whenever the write meets it.
    """
    target = Path(target)
    try:
        suffix = TEMP_SUFFIX + (target.suffix if keep_suffix else "")
        fd, name = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARK}", suffix=suffix, dir=target.parent)
    except OSError as e:
        if is_disk_full(e):
            raise no_space_error(target, error) from None
        shown = f"{what} {target}" if what else str(target)
        raise error(f"cannot write {shown}: {e.strerror or e}; pass a path in a folder you can write") from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600
        with disk_full_as_one_line(target, error):  # the write, the fsync or the rename
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: str | os.PathLike[str], text: str, *, what: str = "") -> Path:
    """Write `text` (UTF-8) to `target` atomically; returns the path."""
    with atomic_path(target, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


class Writeback:
    """Flushes a file being written to disk on a background thread, so the fsync before its rename finds
    little left to write.

    atomic_path fsyncs the whole file before renaming it; for a split of 250 MB that wait (0.6 s
    here) came after the last row, with every core idle. kick() after each large write starts an
    fdatasync of what is written so far on a thread of its own (the disk works while the caller
    decodes the next rows); a kick while one runs is skipped, the next catches up. An error of the
    background flush is raised by close(): the kernel reports a failed write-back once, to the
    descriptor that asked, so the final fsync might not see it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def kick(self) -> None:
        """Start flushing what is written so far, unless a flush is running."""
        if self._fd is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._flush, args=(self._fd,), name="longtail-writeback", daemon=True)
        self._thread.start()

    def _flush(self, fd: int) -> None:
        try:
            getattr(os, "fdatasync", os.fsync)(fd)
        except OSError as e:
            self._error = e

    def close(self) -> None:
        """Wait for a running flush and release the file.

        Raises:
            OSError: a background flush failed.
        """
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
