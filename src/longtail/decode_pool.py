"""Ingest's decoders: batches of files read and decoded, in order, by this process and a pool of processes.

Kept apart from ingest (listing, planning, writing HDF5) so that the pool's fork server imports only
what a worker runs: numpy, OpenCV, Pillow and the readers, not h5py or the config (0.23 s, not 0.33).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from longtail import decode_server, storage
from longtail.decode import MAX_FILE_BYTES, DecodeError, PixelSettings, to_pixels
from longtail.decode_server import POOL_MIN_FILES
from longtail.storage import ObjectNotFound, S3Settings

# Files per task sent to a worker (its pixels come back in one slot of the shared ring).
BATCH_FILES = 64

# Batches handed to the pool and not yet consumed, at most: the read-ahead (64 x 64 files).
IN_FLIGHT_BATCHES = 64
# Batches queued per pool worker (one running, three waiting), so none idles while this process writes.
QUEUED_PER_WORKER = 4
# Batches this process decodes ahead of the one it is waiting for from the pool, at most.
OWN_AHEAD_BATCHES = 8
# Workers put their pixels into a ring of batch-sized slots shared with this process, at most this
# many bytes (fewer slots for bigger images, but enough for every worker's queue and one more).
RING_BYTES = 64 * 2**20


# Worker state, set once per process by _init_worker.
_settings: PixelSettings | None = None
_s3: S3Settings | None = None
_ring: np.ndarray | None = None  # (slots, batch files, S, S, 3): the pool's shared pixel slots


def _init_worker(settings: PixelSettings, s3: S3Settings | None, single_thread: bool,
                 aws_environ: dict[str, str] | None = None, ring: Any = None,
                 ring_shape: tuple[int, ...] | None = None) -> None:
    global _settings, _s3, _ring
    import cv2

    _settings, _s3 = settings, s3
    if ring is not None and ring_shape is not None:
        _ring = np.frombuffer(ring, dtype=np.uint8).reshape(ring_shape)
    # A forkserver keeps the environment of the moment it started, which may predate the caller's
    # AWS settings: workers take the parent's current AWS_* values (over the pool's private pipe).
    os.environ.update(aws_environ or {})
    # Errors only: a broken file is reported in ingest.json, not as libpng/libjpeg warnings on stderr.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if single_thread:
        cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _load(uri: str) -> tuple[np.ndarray | None, str, str, int]:
    """Read and convert one file: (pixels, "", sha256, size), or (None, reason, "", size) if rejected."""
    assert _settings is not None
    try:
        data = storage.read_bytes(uri, _s3, max_bytes=MAX_FILE_BYTES)
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


@dataclass
class Batch:
    """What a worker sends back for a batch of files: the decoded rows in one array (or in its slot
    of the shared ring, when it was given one) and, per file, its reason if rejected, hash and size."""

    pixels: np.ndarray | None  # (n_ok, S, S, 3) uint8, in file order; None when in the ring
    reasons: list[str]  # "" where decoded
    digests: list[str]
    sizes: list[int]
    channel_sums: np.ndarray  # (3,) float64: exact per-channel sums of the pixels, for the train mean


def _load_batch(uris: list[str], slot: int | None = None) -> Batch:
    """Load a batch of files; with a slot, their pixels go into that slot of the shared ring."""
    assert _settings is not None
    storage.prefetch(uris)  # the disk reads the batch's files while the first ones are decoded
    loaded = [_load(uri) for uri in uris]
    ok = [px for px, _, _, _ in loaded if px is not None]
    size = _settings.image_size
    if slot is not None and _ring is not None:
        pixels = _ring[slot, : len(ok)]
        for row, px in zip(pixels, ok, strict=True):
            row[...] = px
    else:
        pixels = np.stack(ok) if ok else np.empty((0, size, size, 3), np.uint8)
    # The mean's sums are taken here, in parallel, not in the parent, which also receives and writes
    # every row.
    return Batch(None if slot is not None and _ring is not None else pixels, [r for _, r, _, _ in loaded],
                  [d for _, _, d, _ in loaded], [n for _, _, _, n in loaded], channel_sums(pixels))


def channel_sums(pixels: np.ndarray) -> np.ndarray:
    """Exact per-channel sums (3,) of (N, S, S, 3) uint8 pixels, as float64, for the train mean.

    Whole rows are summed first: a reduction over a (N, 3) view is ten times slower.
    """
    per_row = pixels.reshape(-1, pixels.shape[-2] * 3).sum(axis=0, dtype=np.uint64)
    return per_row.reshape(-1, 3).sum(axis=0).astype(np.float64)


def worker_count(workers: int | None, n_files: int) -> int:
    """Processes for `n_files`: the asked number (default one per CPU, but one below POOL_MIN_FILES),
    never more than one per two batches."""
    if workers is None:
        workers = 1 if n_files < POOL_MIN_FILES else os.cpu_count() or 1
    return max(1, min(workers, n_files // (2 * BATCH_FILES)))


def decoded_batches(
    batches: list[list[str]], settings: PixelSettings, s3: S3Settings | None, workers: int
) -> Iterator[Batch]:
    """_load_batch over batches, results in order, decoded by `workers` processes: this one and a pool.

    This process is one of the decoders: while the batch it needs next is still in a pool worker's
    hands, it decodes the next batch nobody has taken, so it never waits idle with work left, and
    `--workers 2` is one extra process on 2 cores, not two decoders beside a writer that compete
    with it for them.

    The pool is a ProcessPoolExecutor, not a multiprocessing.Pool: Pool's worker-handler thread
    waits on the result pipe as well as on the workers, so while a result is waiting to be read it
    spins and takes the GIL from the threads doing the work. Pixels come back through a ring of
    shared slots, not pickled through the result pipe (245 MB for 20k images at 64 px), and not
    copied out either: a batch's pixels may be a view of its slot, valid until the caller asks for the
    next batch, when the slot is handed out again. The slots also bound the read-ahead and its memory.
    """
    if workers <= 1:
        _init_worker(settings, s3, single_thread=False)
        yield from map(_load_batch, batches)
        return
    import cv2

    threads = cv2.getNumThreads()
    _init_worker(settings, s3, single_thread=True)  # this process decodes beside the pool: one thread each
    ctx = decode_server.pool_context()
    size = settings.image_size
    pool_workers = workers - 1
    shape = (0, max(map(len, batches)), size, size, 3)
    slot_bytes = int(np.prod(shape[1:]))
    # Slots for every batch the pool may hold (those queued, and those done and waiting while this
    # process is on its own batches ahead of them, and one more) within the bounds; never fewer than
    # the queue and one.
    useful = QUEUED_PER_WORKER * pool_workers + OWN_AHEAD_BATCHES + 1
    slots = max(QUEUED_PER_WORKER * pool_workers + 1, min(useful, IN_FLIGHT_BATCHES, RING_BYTES // slot_bytes))
    shape = (slots, *shape[1:])
    # An anonymous memory-backed file (in /dev/shm when it has room, else the temp folder) that the
    # workers receive at start-up; it goes away with the last process that maps it.
    ring_memory = ctx.RawArray(ctypes.c_uint8, slots * slot_bytes)
    ring = np.frombuffer(ring_memory, dtype=np.uint8).reshape(shape)
    aws_environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    executor = ProcessPoolExecutor(pool_workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(settings, s3, True, aws_environ, ring_memory, shape))
    # The first worker forks once the fork server has imported the decoders: that wait (and the
    # fork) happens on a thread, while this process decodes the first batches itself.
    with ThreadPoolExecutor(1, thread_name_prefix="longtail-pool-start") as starter:
        started = starter.submit(executor.submit, int)  # a no-op task: the pool's first worker is up when it is taken

        def pool_ready() -> bool:
            return started.done() and started.result() is not None  # result() raises if the pool failed to start

        try:
            yield from _shared_decode(batches, lambda files, slot: executor.submit(_load_batch, files, slot),
                                      _load_batch, ring, pool_workers, pool_ready)
        finally:
            # On an error, batches not yet started are dropped; the few already running finish first.
            wait([started])
            executor.shutdown(wait=True, cancel_futures=True)
            cv2.setNumThreads(threads)


def pool_depth(left: int, pool_workers: int) -> int:
    """Batches the pool may hold unfinished when `left` batches are neither decoded nor taken by this
    process: QUEUED_PER_WORKER per worker, but near the end no more than the pool's share of what is
    left (at least one per worker), so this process is not left waiting on a full queue once the
    batches nobody has taken run out."""
    share = left * pool_workers // (pool_workers + 1)
    return max(pool_workers, min(QUEUED_PER_WORKER * pool_workers, share))


def _shared_decode(batches: list[list[str]], submit: Callable[[list[str], int], Future[Batch]],
                   decode_here: Callable[[list[str]], Batch], ring: np.ndarray,
                   pool_workers: int, pool_ready: Callable[[], bool] = lambda: True) -> Iterator[Batch]:
    """Batches in order, each decoded by the pool (into a ring slot) or by this process, whichever is free.

    Batches are handed out in order: the pool's queue is kept QUEUED_PER_WORKER deep per worker
    (shallower near the end: pool_depth),
    and whenever the batch due next is still in the pool, this process takes the next batch nobody
    has (up to OWN_AHEAD_BATCHES ahead) instead of waiting.

    Args:
        submit: hands (files, ring slot) to the pool; the future's batch has its pixels in that slot.
        decode_here: decodes a batch in this process.
        pool_ready: whether the pool has started; until then this process decodes every batch.
    """
    n = len(batches)
    free_slots = deque(range(len(ring)))
    in_pool: dict[int, tuple[Any, int]] = {}  # batch -> (future, ring slot)
    own: dict[int, Batch] = {}  # decoded here ahead of their turn
    handed = 0  # batches [0, handed) have a decoder

    def feed_pool() -> None:
        nonlocal handed
        if not pool_ready():
            return
        busy = sum(1 for future, _ in in_pool.values() if not future.done())
        while handed < n and free_slots and busy < pool_depth(n - handed + busy, pool_workers):
            slot = free_slots.popleft()
            in_pool[handed] = (submit(batches[handed], slot), slot)
            handed, busy = handed + 1, busy + 1

    for i in range(n):
        feed_pool()
        while i in in_pool and not in_pool[i][0].done() and handed < n and len(own) < OWN_AHEAD_BATCHES:
            own[handed] = decode_here(batches[handed])
            handed += 1
            feed_pool()
        if i in own:
            yield own.pop(i)
        elif i in in_pool:
            future, slot = in_pool.pop(i)
            batch = future.result()
            n_ok = sum(1 for reason in batch.reasons if not reason)
            batch.pixels = ring[slot, :n_ok]  # not copied: the slot is handed out again once the caller is back
            yield batch
            free_slots.append(slot)
        else:  # nobody has it yet (the pool's queue is full of later batches' slots)
            handed += 1
            yield decode_here(batches[i])
