"""Where a command may write: never over its own input, into the model directory it reads, onto a device, or over a user's file.

Every command checks all its output paths here before any work (docs/safety.md "Ownership"), and
every folder longtail fills gets a record of the files it wrote there, the proof that a later run
may replace them.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from longtail.atomic_file import write_text
from longtail.errors import LongtailError, StorageError
from longtail.file_bounds import MiB, read_bounded
from longtail.storage import is_s3

# Written last into each folder longtail fills (a model directory, an evaluation or ingest folder, a
# dataset): every file it wrote there, by name, with its size. A file at one of longtail's output
# names is longtail's when this record lists it at its present size; anything else is the user's.
RECORD_FILE = ".longtail-written.json"
# A record this big is not one longtail wrote: scaled-lt's 110,000 files take about 4 MB.
WRITTEN_RECORD_MAX_BYTES = 64 * MiB

# The help of --force, the flag of every command with a folder output (train, evaluate, ingest).
FORCE_HELP = ("overwrite a file at one of this command's output names that longtail did not write there "
              "(by default such a file is refused and kept)")

_SPECIAL = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}
# /dev/stdout, /dev/fd/N and /proc/self/fd/N lead here: a stream of this process, not a file.
_PROC = Path("/proc")


@dataclass(frozen=True)
class Input:
    """A path a command reads, named as its help names it ("test split"); None or s3:// is skipped."""

    path: str | os.PathLike[str] | None
    what: str


@dataclass(frozen=True)
class Output:
    """A path a command writes: a file, or a folder (`folder=True`) it writes the files `names` into.

    A folder's `names` are checked for ownership: each one present must be in the folder's record
    (RECORD_FILE) at its present size, unless the command runs with --force.
    """

    path: str | os.PathLike[str] | None
    what: str
    folder: bool = False
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Read:
    """One input as found on disk: its inode and where it really is."""

    what: str
    path: Path
    dev: int
    ino: int
    real: str


def check_outputs(outputs: Iterable[Output], inputs: Iterable[Input] = (), *,
                  model_dir: str | os.PathLike[str] | None = None, force: bool = False) -> None:
    """Refuse an output path that would destroy what the command reads, a device, or a user's file.

    Each local output must not be an input (the same inode: a hard link counts), nor a link to one;
    not a character or block device, FIFO or socket (nor a link to one, or to a stream such as
    /dev/stdout); and not inside `model_dir`, the model directory the command reads. A link at an
    output path that passes is replaced by the new file, never written through. In a folder output,
    a regular file at one of its `names` that the folder's record does not list at its size is the
    user's, and refused unless `force`. A path that does not exist yet passes; a file where a folder
    belongs (or the reverse) is left to the writer's own check.

    Raises:
        StorageError: naming the first output path that breaks a rule and the fix.
    """
    read = list(_found(inputs, model_dir))
    model_real = os.path.realpath(model_dir) if model_dir is not None else None
    for out in outputs:
        if out.path is None or is_s3(out.path):
            continue
        path = Path(out.path)
        if not out.folder:
            _check_file(path, f"{out.what} {path}", "name another file", read, model_real)
            continue
        _check_folder(path, out.what, read, model_real)
        fix = "move it away or pass another folder"
        for name in out.names:
            _check_file(path / name, f"{out.what} {path} holds {name}, which", fix, read, model_real)
        if out.names and not force:
            _check_owned(path, out.what, out.names)


def _found(inputs: Iterable[Input], model_dir: str | os.PathLike[str] | None) -> Iterator[_Read]:
    """The inputs that exist locally, and every file directly in the model directory."""
    listed = [i for i in inputs if i.path is not None and not is_s3(i.path)]
    if model_dir is not None:
        listed.append(Input(model_dir, "model directory"))
        try:
            names = sorted(os.listdir(model_dir))
        except OSError:
            names = []
        listed += [Input(Path(model_dir) / name, f"{name} of the model directory") for name in names]
    for item in listed:
        try:
            st = os.stat(item.path)
        except (OSError, ValueError):
            continue
        yield _Read(item.what, Path(item.path), st.st_dev, st.st_ino, os.path.realpath(item.path))


def _same_as_input(st: os.stat_result, read: list[_Read]) -> _Read | None:
    return next((r for r in read if (r.dev, r.ino) == (st.st_dev, st.st_ino)), None)


def _inside(real: str, folder_real: str | None) -> bool:
    return folder_real is not None and (real == folder_real or real.startswith(folder_real.rstrip(os.sep) + os.sep))


def _check_file(path: Path, subject: str, fix: str, read: list[_Read], model_real: str | None) -> None:
    """One file output path. `subject` starts the message: "submission CSV x.csv", or "... holds NAME, which"."""
    # Where the new file will be: the link itself is replaced, so its folder, not its target, counts.
    where = os.path.join(os.path.realpath(path.parent), path.name)
    if _inside(where, model_real):
        raise StorageError(f"{subject} is inside the model directory {model_real} this command reads; write it "
                           "outside that folder")
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return  # new, or a path the writer's own check names
    if stat.S_ISLNK(st.st_mode):
        stream = _stream_link(Path(where))
        if stream is not None:
            raise StorageError(f"{subject} is a link to {stream}, a stream of this process, not a file: longtail "
                               f"writes only regular files; {fix}")
        target = os.path.realpath(path)
        try:
            st = os.stat(path)
        except OSError:
            return  # a dangling link: replaced
        kind, same = _SPECIAL.get(stat.S_IFMT(st.st_mode)), _same_as_input(st, read)
        if kind:
            raise StorageError(f"{subject} is a link to {target}, {kind}: longtail writes only regular files; {fix}")
        if same:
            raise StorageError(f"{subject} is a link to the {same.what} {same.path} this command reads; {fix}")
        return
    kind = _SPECIAL.get(stat.S_IFMT(st.st_mode))
    if kind:
        raise StorageError(f"{subject} is {kind}: longtail writes only regular files; {fix}")
    same = _same_as_input(st, read)
    if same is not None:
        how = "the" if os.path.realpath(path) == same.real else "a hard link to the"
        raise StorageError(f"{subject} is {how} {same.what} {same.path} this command reads; {fix}")


def _stream_link(link: Path) -> str | None:
    """The /proc entry a chain of links from `link` passes through (/dev/stdout -> /proc/self/fd/1), or None.

    realpath alone cannot tell: it resolves /proc/self/fd/1 on to whatever file the stream is.
    """
    current = link
    for _ in range(40):  # the kernel's own limit on links in a path
        if current.is_relative_to(_PROC):
            return str(current)
        try:
            target = os.readlink(current)
        except OSError:
            return None
        current = Path(os.path.normpath(os.path.join(os.path.realpath(current.parent), target)))
    return None


def _check_folder(path: Path, what: str, read: list[_Read], model_real: str | None) -> None:
    """A folder output: followed when it is a link (a folder on a bigger disk), then checked like a file."""
    real = os.path.realpath(path)
    if _inside(real, model_real):
        raise StorageError(f"{what} {path} is inside the model directory {model_real} this command reads; pass a "
                           "folder outside it")
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    kind = _SPECIAL.get(stat.S_IFMT(st.st_mode))
    if kind:
        raise StorageError(f"{what} {path} is {kind}; name a folder (it is created if missing)")
    same = _same_as_input(st, read)
    if same is not None:
        raise StorageError(f"{what} {path} is the {same.what} {same.path} this command reads; pass another folder")


def _check_owned(folder: Path, what: str, names: tuple[str, ...]) -> None:
    """Refuse a regular file at one of `names` that the folder's record does not list at its size."""
    record = recorded(folder)
    for name in names:
        try:
            st = os.lstat(folder / name)
        except (OSError, ValueError):
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # replaced, never followed (its target was checked)
        if stat.S_ISDIR(st.st_mode):
            raise StorageError(f"{what} {folder} holds a folder {name} where longtail writes a file; move it, "
                               "or pass another folder")
        if record.get(name) != st.st_size:
            raise StorageError(f"{what} {folder} holds {name}, which longtail did not write; remove it, pass another "
                               "folder, or pass --force to overwrite it")


def recorded(folder: str | os.PathLike[str]) -> dict[str, int]:
    """The folder's record: {relative path: size} of the files longtail wrote there ({} when it has none)."""
    path = Path(folder) / RECORD_FILE
    try:
        if os.path.islink(path):  # longtail writes the record itself, never a link
            return {}
        data = read_bounded(path, f"record {path}", WRITTEN_RECORD_MAX_BYTES)
        files = json.loads(data).get("files") if data is not None else None
    except (LongtailError, ValueError, AttributeError):  # unreadable, or not longtail's JSON: proves nothing
        return {}
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, int)}


def record_written(folder: str | os.PathLike[str], names: Iterable[str]) -> Path:
    """Record the files `names` as they are now in `folder` (one gone is dropped); others listed stay.

    Called after the files are written: a run killed in between leaves them unrecorded, and the next
    run asks for --force.

    Returns:
        The record's path.
    """
    folder = Path(folder)
    files = recorded(folder)
    for name in names:
        try:
            st = os.lstat(folder / name)
        except OSError:
            files.pop(name, None)
            continue
        if stat.S_ISREG(st.st_mode):
            files[name] = st.st_size
        else:
            files.pop(name, None)
    return _write_record(folder, files)


def record_tree(folder: str | os.PathLike[str]) -> Path:
    """Record every file under `folder` (a dataset just made); the record is the last file written."""
    folder = Path(folder)
    files = {rel: size for rel, size, is_file in _walk(folder) if is_file}
    return _write_record(folder, files)


def first_unrecorded(folder: str | os.PathLike[str]) -> str | None:
    """The first entry under `folder` (sorted) that its record does not list: a file not listed or of
    another size, a link, a device, or an empty folder not listed; None when all are longtail's.

    Raises:
        OSError: `folder` is not a folder.
    """
    folder = Path(folder)
    record = recorded(folder)
    parents = {p.as_posix() for rel in record for p in Path(rel).parents}
    for rel, size, is_file in _walk(folder):
        if rel == RECORD_FILE:
            continue
        if is_file:
            if record.get(rel) != size:
                return rel
        elif size < 0 or (rel not in parents and _empty(folder / rel)):
            return rel  # a link, a device, or an empty folder (a folder of files names its first file)
    return None


def _empty(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return next(it, None) is None


def _walk(folder: Path, prefix: str = "") -> Iterator[tuple[str, int, bool]]:
    """(relative path, size, is a regular file) of every entry under `folder`, sorted, links not followed.

    A folder yields size 0 and is walked into; a link or special file yields size -1.
    """
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            yield rel, st.st_size, True
        elif stat.S_ISDIR(st.st_mode):
            yield rel, 0, False
            yield from _walk(Path(entry.path), rel + "/")
        else:
            yield rel, -1, False


def _write_record(folder: Path, files: dict[str, int]) -> Path:
    return write_text(folder / RECORD_FILE, json.dumps({"files": dict(sorted(files.items()))}, indent=0) + "\n",
                      what="record of written files")
