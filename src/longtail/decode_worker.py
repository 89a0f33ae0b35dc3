"""What a decoder runs: files read, checked and decoded into a batch of rows. Pool workers and ingest's
own process run it; the pool's fork server imports it once (numpy, OpenCV, Pillow, the readers).

Kept apart from decode_pool (which hands batches out and needs none of that), so that ingest starts its
pool, and the pool decodes, while ingest's own process is still loading OpenCV and h5py.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import cv2
import numpy as np

from longtail import storage
from longtail.decode import MAX_FILE_BYTES, DecodeError, PixelSettings, to_pixels
from longtail.decoded_batch import Batch, channel_sums, pixel_digest
from longtail.s3_read_ahead import ReadAhead
from longtail.storage import ObjectNotFound, S3Settings

# Set once per process by init.
_settings: PixelSettings | None = None
_s3: S3Settings | None = None
_ring: np.ndarray | None = None  # (slots, batch files, S, S, 3): the pool's shared pixel slots
_reads: ReadAhead | None = None  # this process's S3 reads, made on its first s3:// file


def init(settings: PixelSettings, s3: S3Settings | None, single_thread: bool,
         aws_environ: dict[str, str] | None = None, ring: Any = None,
         ring_shape: tuple[int, ...] | None = None) -> None:
    """Make this process a decoder for `settings`; in a pool worker, with the pool's ring of slots."""
    global _settings, _s3, _ring
    close_reads()  # an earlier ingest's, in this process
    _settings, _s3 = settings, s3
    if ring is not None and ring_shape is not None:
        _ring = np.frombuffer(ring, dtype=np.uint8).reshape(ring_shape)
    # A forkserver keeps the environment of the moment it started, which may predate the caller's
    # AWS settings: workers take the parent's current AWS_* values (passed when the worker starts).
    os.environ.update(aws_environ or {})
    # Errors only: a broken file is reported in ingest.json, not as libpng/libjpeg warnings on stderr.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if single_thread:
        cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def opencv_threads(n: int | None = None) -> int:
    """OpenCV's thread count in this process, set to `n` first when given."""
    if n is not None:
        cv2.setNumThreads(n)
    return cv2.getNumThreads()


def read_ahead(uris: list[str]) -> None:
    """Start reading a batch's S3 objects now, after those already asked for (local files: nothing
    to do). A pool worker calls it for each batch queued behind the one it decodes."""
    global _reads
    s3_uris = [uri for uri in uris if storage.is_s3(uri)]
    if not s3_uris:
        return
    if _reads is None:
        _reads = ReadAhead(_s3 or S3Settings(), MAX_FILE_BYTES)
    _reads.want(s3_uris)


def close_reads() -> int:
    """Stop this process's S3 reads; returns the most GETs it had in flight at once (0: none made)."""
    global _reads
    if _reads is None:
        return 0
    _reads.close()
    peak, _reads = _reads.peak_in_flight, None
    return peak


def _read(uri: str) -> bytes:
    if _reads is not None and storage.is_s3(uri):
        return _reads.take(uri)
    return storage.read_bytes(uri, _s3, max_bytes=MAX_FILE_BYTES)


def _load(uri: str) -> tuple[np.ndarray | None, str, str, int]:
    """Read and convert one file: (pixels, "", sha256, size), or (None, reason, "", size) if rejected."""
    assert _settings is not None
    try:
        data = _read(uri)
    except ObjectNotFound:
        return None, "file not found", "", 0
    except storage.ReadRefused as e:
        return None, str(e), "", 0
    except storage.StorageError as e:
        if storage.is_s3(uri):
            raise  # endpoint trouble stops the ingest; it says nothing about this file
        return None, f"cannot read: {e}", "", 0
    try:
        pixels = to_pixels(data, _settings)
    except DecodeError as e:
        return None, str(e), "", len(data)
    return pixels, "", hashlib.sha256(data).hexdigest(), len(data)


def load_batch(uris: list[str], slot: int | None = None) -> Batch:
    """Load a batch of files; with a slot, their pixels go into that slot of the shared ring."""
    assert _settings is not None
    storage.prefetch(uris)  # the disk reads the batch's files while the first ones are decoded
    read_ahead(uris)  # and S3 serves its objects, many at a time (none twice: a worker may have asked already)
    loaded = [_load(uri) for uri in uris]
    ok = [px for px, _, _, _ in loaded if px is not None]
    size = _settings.image_size
    if slot is not None and _ring is not None:
        pixels = _ring[slot, : len(ok)]
        for row, px in zip(pixels, ok, strict=True):
            row[...] = px
    else:
        pixels = np.stack(ok) if ok else np.empty((0, size, size, 3), np.uint8)
    # The mean's sums and the pixels' digests are taken here, in parallel, not in the parent, which also
    # receives and writes every row.
    return Batch(None if slot is not None and _ring is not None else pixels, [r for _, r, _, _ in loaded],
                 [d for _, _, d, _ in loaded], [n for _, _, _, n in loaded], channel_sums(pixels),
                 [pixel_digest(px) for px in ok])
