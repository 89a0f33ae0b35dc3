"""One writer per output folder: an advisory lock file inside it, holding the writer's PID."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from longtail.errors import StorageError

# The lock file longtail owns in every folder it writes (an ingest output, a model directory, a
# checkpoint directory). The kernel drops the lock when its process dies, however it dies, so a
# file left by a killed run is simply taken over.
LOCK_FILE = ".longtail.lock"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold the lock on `folder` (created if missing) for the block; yields the folder.

    On release the lock file is removed, and so is the folder when this lock created it and it is
    still empty (a run that failed before writing anything leaves nothing behind).

    Args:
        what: names the folder in the error, e.g. "model directory".

    Raises:
        StorageError: another live process holds the lock (its PID is named), or the folder cannot
            be made.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = "a file is in the way" if isinstance(e, FileExistsError) else e.strerror or e
        raise StorageError(f"cannot make {what} {folder}: {reason}; pass an output folder you can write") from None
    fd = _acquire(folder / LOCK_FILE, folder, what)
    try:
        yield folder
    finally:
        # Unlink while still holding the lock: a process waiting on this inode sees it gone and retries.
        (folder / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(path: Path, folder: Path, what: str) -> int:
    """Lock `path`, write this PID into it, and return its descriptor."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot lock {what} {folder}: {e.strerror or e}; pass an output folder you can "
                               "write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise StorageError(f"cannot lock {what} {folder}: {e.strerror or e}") from None
            raise StorageError(
                f"{what} {folder} is in use by another longtail process (PID {holder}); wait for it to "
                f"finish, or pass another folder"
            ) from None
        # The file may have been released and removed between open and flock: lock the one on disk.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _read_pid(fd: int) -> str:
    """The PID a lock file records, or '?' while its holder has not written it yet."""
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"
