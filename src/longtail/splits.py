"""The HDF5 split contract: one file per split, written whole or not at all."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from longtail.atomic_file import Writeback, atomic_path
from longtail.decoded_batch import pixel_digest
from longtail.disk_full import check_room, disk_full_as_one_line
from longtail.errors import DataError, StorageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# The splits ingest writes, one file each (docs/architecture.md "HDF5 splits": OUT/train.h5 and OUT/val.h5, or OUT/test.h5).
SPLITS = ("train", "val", "test")
SPLIT_SUFFIX = ".h5"
# The datasets inside a split file (docs/architecture.md "HDF5 splits"); a test split has no LABELS.
IMAGES = "images"
LABELS = "labels"
IDS = "ids"
# Rows per chunk: a training batch of 64-256 reads one or a few chunks, never a whole-file scan.
CHUNK_ROWS = 64
# A SplitWriter starts flushing its file to disk in the background after each this many bytes of rows.
WRITEBACK_BYTES = 8 * 2**20
# What HDF5 stores per row beside the id's characters: its heap entry and reference, and the label.
ID_ROW_BYTES = 40


def split_file(split: str) -> str:
    """The file name of a split: train.h5, val.h5 or test.h5."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split + SPLIT_SUFFIX


def split_path(folder: str | os.PathLike[str], split: str) -> str:
    """Where ingest put `split` inside `folder` (a KFP Dataset artifact's path, or ingest's OUT)."""
    return os.path.join(os.fspath(folder), split_file(split))


@dataclass
class SplitInfo:
    """Everything about a split except its pixels."""

    path: Path
    n: int
    image_size: int
    class_names: list[str]
    has_labels: bool
    mean_rgb: list[float] | None
    preprocessing: dict[str, Any]
    source_fingerprint: str
    schema_version: int
    labels: np.ndarray | None = field(default=None, repr=False)

    def class_counts(self) -> list[int]:
        """Rows per class index (empty for an unlabelled split)."""
        if self.labels is None:
            return []
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(int).tolist()


def write_split(
    path: str | Path,
    images: np.ndarray,
    ids: list[str],
    *,
    class_names: list[str],
    image_size: int,
    preprocessing: dict[str, Any],
    source_fingerprint: str,
    labels: np.ndarray | None = None,
    mean_rgb: list[float] | None = None,
) -> Path:
    """Write one split atomically: a temporary file in the same folder, then a rename.

    Args:
        images: uint8 (N, H, W, 3).
        ids: source path of each row, relative to the ingest SOURCE.
        labels: int class indices (N,), or None for an unlabelled (test) split.
        mean_rgb: per-channel mean of the train split, stored on train files only.

    Returns:
        The final path.
    """
    path = Path(path)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path.name}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(ids) != len(images):
        raise DataError(f"{path.name}: {len(ids)} ids for {len(images)} images")
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{path.name}: {len(labels)} labels for {len(images)} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = SplitWriter(
        path,
        n=len(images),
        image_size=images.shape[1] if len(images) else image_size,
        class_names=class_names,
        labelled=labels is not None,
        preprocessing=preprocessing,
        source_fingerprint=source_fingerprint,
        width=images.shape[2] if len(images) else image_size,
    )
    with writer:
        writer.write(0, images, ids, labels)
        if mean_rgb is not None:
            writer.set_mean_rgb(mean_rgb)
    return path


class SplitWriter:
    """Streams rows into a split file that only appears under its name once complete.

    Use as a context manager; an exception inside the block removes the temporary file,
    so a failed ingest never leaves a half-written split behind. Each write first checks that the disk
    has room for it (disk_full.check_room), so a full disk is one line and HDF5 never meets it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n: int,
        image_size: int,
        class_names: list[str],
        labelled: bool,
        preprocessing: dict[str, Any],
        source_fingerprint: str,
        width: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.n = n
        self.height = image_size
        self.width = width or image_size
        self.class_names = list(class_names)
        self.labelled = labelled
        self.preprocessing = preprocessing
        self.source_fingerprint = source_fingerprint
        self._file: h5py.File | None = None
        self._images: h5py.Dataset | None = None  # looked up once, not by name (25 µs) per write
        self._tmp: Path | None = None
        self._atomic: Any = None
        self._writeback: Writeback | None = None
        self._unflushed = 0  # bytes of rows written since the last Writeback.kick

    def __enter__(self) -> SplitWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot write {self.path}: {e.strerror or e}; pass an output folder you can write") from None
        self._atomic = atomic_path(self.path, error=DataError)
        self._tmp = self._atomic.__enter__()
        try:
            with disk_full_as_one_line(self.path):
                self._create()
        except BaseException as e:
            # __exit__ never runs when __enter__ fails: the temporary file goes here.
            if self._file is not None:
                self._file.close()
            if self._writeback is not None:
                self._writeback.close()
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _create(self) -> None:
        """Create the datasets and attributes in the temporary file."""
        assert self._tmp is not None
        f = h5py.File(self._tmp, "w")
        self._file = f
        self._writeback = Writeback(self._tmp)
        chunk = (max(1, min(CHUNK_ROWS, self.n)), self.height, self.width, 3)
        # Unlimited first axis, so truncate() can drop rows planned but never written (undecodable files).
        self._images = f.create_dataset(IMAGES, shape=(self.n, self.height, self.width, 3), dtype=np.uint8,
                                        chunks=chunk, maxshape=(None, self.height, self.width, 3))
        if self.labelled:
            f.create_dataset(LABELS, shape=(self.n,), dtype=np.int32, maxshape=(None,))
        f.create_dataset(IDS, shape=(self.n,), dtype=h5py.string_dtype("utf-8"), maxshape=(None,))
        f.attrs["class_names"] = json.dumps(self.class_names)
        f.attrs["image_size"] = int(self.height)
        f.attrs["preprocessing"] = json.dumps(self.preprocessing, sort_keys=True)
        f.attrs["source_fingerprint"] = self.source_fingerprint
        f.attrs["schema_version"] = SCHEMA_VERSION

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of the images: a write of whole chunks at a multiple of this is a raw chunk write."""
        assert self._images is not None, "use SplitWriter as a context manager"
        return int(self._images.chunks[0])

    def write(self, start: int, images: np.ndarray, ids: list[str], labels: np.ndarray | None = None) -> None:
        """Write rows [start, start + len(images)): images, ids and labels."""
        self.write_images(start, images)
        self.write_ids(start, ids, labels)

    def write_images(self, start: int, images: np.ndarray) -> None:
        """Write the images of rows [start, start + len(images)) (see _write_images)."""
        assert self._file is not None, "use SplitWriter as a context manager"
        if not len(images):
            return
        check_room(self.path, images.nbytes)
        with disk_full_as_one_line(self.path):
            self._write_images(start, images)
            self._unflushed += images.nbytes
            if self._unflushed >= WRITEBACK_BYTES and self._writeback is not None:
                self._file.flush()  # HDF5's own buffers to the OS, then the OS's to disk, in the background
                self._writeback.kick()
                self._unflushed = 0

    def write_ids(self, start: int, ids: list[str], labels: np.ndarray | None = None) -> None:
        """Write the ids (and labels, in a labelled split) of rows [start, start + len(ids))."""
        assert self._file is not None, "use SplitWriter as a context manager"
        if not ids:
            return
        if self.labelled and labels is None:
            raise DataError(f"{self.path.name}: labelled split written without labels")
        check_room(self.path, sum(map(len, ids)) + ID_ROW_BYTES * len(ids))
        with disk_full_as_one_line(self.path):
            self._file[IDS][start : start + len(ids)] = list(ids)
            if self.labelled:
                self._file[LABELS][start : start + len(ids)] = np.asarray(labels, dtype=np.int32)

    def _write_images(self, start: int, images: np.ndarray) -> None:
        """Rows [start, start + len(images)) of the images: each whole chunk they cover as one raw
        chunk write (HDF5's direct chunk write: the file's bytes straight from `images`, without the
        chunk cache's copy and type conversion), the partial chunks at either end through h5py.

        The chunks are unfiltered uint8 rows in C order, so a raw chunk is the rows' bytes as they are.
        """
        dataset = self._images
        assert dataset is not None
        stop = start + len(images)
        rows = dataset.chunks[0]
        first = -(-start // rows) * rows  # the first chunk boundary at or after start
        last = stop // rows * rows  # the last chunk boundary at or before stop
        if (first >= last or images.dtype != np.uint8 or images.shape[1:] != dataset.shape[1:]
                or not images.flags.c_contiguous):
            dataset[start:stop] = images
            return
        if first > start:
            dataset[start:first] = images[: first - start]
        for row in range(first, last, rows):
            dataset.id.write_direct_chunk((row, 0, 0, 0), images[row - start : row - start + rows])
        if stop > last:
            dataset[last:stop] = images[last - start :]

    def set_mean_rgb(self, mean_rgb: list[float]) -> None:
        """Record the per-channel mean (0-255 scale) of this split's pixels."""
        assert self._file is not None
        with disk_full_as_one_line(self.path):
            self._file.attrs["mean_rgb"] = json.dumps([float(v) for v in mean_rgb])

    def truncate(self, n: int) -> None:
        """Shrink the split to its first n rows (rows planned for files that turned out undecodable)."""
        assert self._file is not None
        if not 0 <= n <= self.n:
            raise DataError(f"{self.path.name}: cannot truncate {self.n} rows to {n}")
        with disk_full_as_one_line(self.path):
            for name in (IMAGES, LABELS, IDS):
                if name in self._file:
                    self._file[name].resize(n, axis=0)
        self.n = n

    def set_source_fingerprint(self, fingerprint: str) -> None:
        """Record the source fingerprint once it is known (ingest hashes files as it decodes them)."""
        assert self._file is not None
        self.source_fingerprint = fingerprint
        with disk_full_as_one_line(self.path):
            self._file.attrs["source_fingerprint"] = fingerprint

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._tmp is not None
        error: BaseException | None = exc
        if error is None:
            try:
                check_room(self.path, 0)  # HDF5's last flush, as it closes the file, must not meet a full disk
            except StorageError as e:
                error = e
        if error is not None:
            _discard_writes(self._file)
        try:
            self._file.close()  # HDF5 writes what it still holds: a full disk may fail here first
        except (OSError, RuntimeError) as e:
            error = error or e
        try:
            if self._writeback is not None:
                self._writeback.close()
        except OSError as e:
            error = error or e
        if error is None:
            self._atomic.__exit__(None, None, None)
            return
        # The file did not reach the disk: it must not appear under its name. The temporary file
        # goes, and a full disk is said in one line (atomic_path).
        self._atomic.__exit__(type(error), error, error.__traceback__)
        if error is not exc:
            if isinstance(error, StorageError):
                raise error
            raise DataError(f"cannot write {self.path}: {getattr(error, 'strerror', None) or error}") from None


def _discard_writes(f: h5py.File) -> None:
    """Send what HDF5 still writes into `f`, a file being thrown away, to memory instead of its disk.

    On a full disk HDF5's last flush, as it closes the file, would fail, and HDF5 after a failed flush
    crashes the interpreter at exit. The memory taken is HDF5's unwritten metadata, not the file.
    """
    memfd_create = getattr(os, "memfd_create", None)  # Linux
    if memfd_create is None or not f.id.valid:
        return
    scratch = memfd_create("longtail-discarded-split")
    try:
        os.dup2(scratch, f.id.get_vfd_handle())
    finally:
        os.close(scratch)


def read_info(path: str | Path, *, with_labels: bool = True) -> SplitInfo:
    """Read a split's attributes (and labels, which are small) without its pixels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"HDF5 split not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            for key in (IMAGES, IDS):
                if key not in f:
                    raise DataError(f"{path} is not a longtail split: dataset '{key}' is missing")
            attrs = f.attrs
            labels = f[LABELS][:].astype(np.int32) if (with_labels and LABELS in f) else None
            mean = attrs.get("mean_rgb")
            return SplitInfo(
                path=path,
                n=int(f[IMAGES].shape[0]),
                image_size=int(attrs.get("image_size", f[IMAGES].shape[1])),
                class_names=json.loads(attrs.get("class_names", "[]")),
                has_labels=LABELS in f,
                mean_rgb=json.loads(mean) if mean is not None else None,
                preprocessing=json.loads(attrs.get("preprocessing", "{}")),
                source_fingerprint=str(attrs.get("source_fingerprint", "")),
                schema_version=int(attrs.get("schema_version", 0)),
                labels=labels,
            )
    except OSError as e:
        raise DataError(f"cannot read HDF5 split {path}: {e}") from e


def read_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Load a whole split into memory: (images uint8, labels or None, ids)."""
    path = Path(path)
    info = read_info(path, with_labels=False)
    with h5py.File(path, "r") as f:
        images = f[IMAGES][:]
        labels = f[LABELS][:].astype(np.int32) if info.has_labels else None
        ids = decode_ids(f[IDS][:])
    return images, labels, ids


def decode_ids(raw: Any) -> list[str]:
    """The `ids` dataset as Python strings (h5py returns bytes for variable-length UTF-8)."""
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in raw]


def read_ids(path: str | Path) -> list[str]:
    """A split's ids, in row order."""
    with h5py.File(path, "r") as f:
        return decode_ids(f[IDS][:])


def check_disjoint(train: SplitInfo, val: SplitInfo) -> None:
    """Refuse a val split that shares rows with the train split: the same file, an id, or, from
    another ingest run, an image's pixels.

    Two ingest runs of one source with other seeds (or --val given the train split) would score
    the model on images it trained on, with no other sign than a flattering macro-F1. Within one
    ingest run (same source_fingerprint), equal pixels can only come from copies with other bytes
    in the source (ingest dedupes equal bytes): a warning.

    Raises:
        DataError: naming both splits, how many rows they share, and one shared id.
    """
    if train.path.resolve() == val.path.resolve():
        raise DataError(f"the val split {val.path} is the train split itself; pass the val.h5 from the same ingest")
    fix = "pass the train.h5 and val.h5 of one `longtail ingest` run"
    shared = set(read_ids(train.path)).intersection(read_ids(val.path))
    if shared:
        raise DataError(f"the val split {val.path} shares {len(shared)} ids with the train split {train.path} "
                        f"(e.g. {min(shared)!r}): {fix}")
    seen = {digest for batch in image_batches(train.path, 1024) for digest in _pixel_digests(batch)}
    same = sum(digest in seen for batch in image_batches(val.path, 1024) for digest in _pixel_digests(batch))
    if not same:
        return
    what = f"the val split {val.path} has {same} images whose pixels are also in the train split {train.path}"
    if train.source_fingerprint != val.source_fingerprint:
        raise DataError(f"{what}, from another ingest run: {fix}")
    log.warning("%s (copies with other bytes in the source); val macro-F1 is optimistic", what)


def _pixel_digests(batch: np.ndarray) -> list[bytes]:
    return [pixel_digest(row) for row in batch]


def image_batches(path: str | Path, batch_size: int) -> Iterator[np.ndarray]:
    """A split's images, `batch_size` rows at a time, in row order (uint8 (n, H, W, 3) each)."""
    with h5py.File(path, "r") as f:
        images = f[IMAGES]
        for start in range(0, images.shape[0], batch_size):
            yield images[start: start + batch_size]
