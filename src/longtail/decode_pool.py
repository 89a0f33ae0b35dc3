"""Ingest's decoding, in order: batches of files handed to this process and to a pool of processes.

Only numpy and the standard library here: the decoders themselves (OpenCV, Pillow, the readers) are in
decode_worker, which the pool's fork server imports once and this process imports only when it starts
decoding. So ingest can start the pool, and hand it its first batches, as soon as it has planned its
files, and the pool decodes them while this process is still loading OpenCV and h5py.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from longtail import decode_server
from longtail.decode_server import POOL_MIN_FILES

if TYPE_CHECKING:
    from longtail.pixel_settings import PixelSettings
    from longtail.storage import S3Settings

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


@dataclass
class Batch:
    """What a worker sends back for a batch of files: the decoded rows in one array (or in its slot
    of the shared ring, when it was given one) and, per file, its reason if rejected, hash and size."""

    pixels: np.ndarray | None  # (n_ok, S, S, 3) uint8, in file order; None when in the ring
    reasons: list[str]  # "" where decoded
    digests: list[str]
    sizes: list[int]
    channel_sums: np.ndarray  # (3,) float64: exact per-channel sums of the pixels, for the train mean


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
) -> DecodedBatches:
    """The batches loaded and decoded (decode_worker.load_batch), in order, by `workers` processes:
    this one and a pool. Iterate once; close() stops the pool.

    With a pool, it starts here, before the first batch is asked for: its first batches are handed to
    it at once, so its worker decodes them while the caller is still loading what it writes with.

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
    return DecodedBatches(batches, settings, s3, workers)


class DecodedBatches:
    """What decoded_batches returns: its batches in order (iterate once), and close() to stop the pool."""

    def __init__(self, batches: list[list[str]], settings: PixelSettings, s3: S3Settings | None,
                 workers: int) -> None:
        self._batches, self._settings, self._s3 = batches, settings, s3
        self._pool = _Pool(batches, settings, s3, workers - 1) if workers > 1 else None
        self._iterator = self._decoded()

    def __iter__(self) -> Iterator[Batch]:
        return self._iterator

    def close(self) -> None:
        """Stop decoding: batches not yet started are dropped; the few already running finish first."""
        self._iterator.close()
        if self._pool is not None:
            self._pool.close()

    def _decoded(self) -> Iterator[Batch]:
        # Only now the decoders: the pool has its first batches already.
        from longtail import decode_worker

        if self._pool is None:
            decode_worker.init(self._settings, self._s3, single_thread=False)
            yield from map(decode_worker.load_batch, self._batches)
            return
        threads = decode_worker.opencv_threads()
        decode_worker.init(self._settings, self._s3, single_thread=True)  # beside the pool: one thread each
        try:
            yield from _shared_decode(self._batches, self._pool.submit, decode_worker.load_batch, self._pool.ring,
                                      self._pool.workers, self._pool.ready, self._pool.first)
        finally:
            self._pool.close()
            decode_worker.opencv_threads(threads)


def _pool_init(*args: Any) -> None:
    """A pool worker's initializer: decode_worker.init (which the fork server has loaded already).

    The pool is given these two functions, not decode_worker's own, so that this process can start it
    (and pickle what it runs) without loading the decoders first.
    """
    from longtail import decode_worker

    decode_worker.init(*args)


def _pool_load(files: list[str], slot: int) -> Batch:
    """A pool worker's task: decode_worker.load_batch into a slot of the ring."""
    from longtail import decode_worker

    return decode_worker.load_batch(files, slot)


class _Pool:
    """The pool: `workers` processes from the fork server, the ring of slots they put pixels into, and
    its first batches, handed out as it starts."""

    def __init__(self, batches: list[list[str]], settings: PixelSettings, s3: S3Settings | None,
                 workers: int) -> None:
        ctx = decode_server.pool_context()
        size = settings.image_size
        shape = (0, max(map(len, batches)), size, size, 3)
        slot_bytes = int(np.prod(shape[1:]))
        # Slots for every batch the pool may hold (those queued, and those done and waiting while this
        # process is on its own batches ahead of them, and one more) within the bounds; never fewer than
        # the queue and one.
        useful = QUEUED_PER_WORKER * workers + OWN_AHEAD_BATCHES + 1
        slots = max(QUEUED_PER_WORKER * workers + 1, min(useful, IN_FLIGHT_BATCHES, RING_BYTES // slot_bytes))
        shape = (slots, *shape[1:])
        # An anonymous memory-backed file (in /dev/shm when it has room, else the temp folder) that the
        # workers receive at start-up; it goes away with the last process that maps it.
        ring_memory = ctx.RawArray(ctypes.c_uint8, slots * slot_bytes)
        self.ring = np.frombuffer(ring_memory, dtype=np.uint8).reshape(shape)
        self.workers = workers
        aws_environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        self._executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init,
                                             initargs=(settings, s3, True, aws_environ, ring_memory, shape))
        # The first batches are the pool's from the start, batch i in slot i: it decodes them while this
        # process is still loading the decoders and the HDF5 writer.
        self.first: dict[int, tuple[Future[Batch], int]] = {
            i: (Future(), i) for i in range(min(pool_depth(len(batches), workers), len(batches)))
        }
        # The first worker forks once the fork server has imported the decoders: that wait (and the
        # fork) happens on a thread.
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="longtail-pool-start")
        self._started = self._starter.submit(self._start, [(batches[i], slot, future)
                                                            for i, (future, slot) in self.first.items()])

    def _start(self, first: list[tuple[list[str], int, Future[Batch]]]) -> None:
        self._executor.submit(int)  # a no-op: the first worker is forked here, once the fork server is up
        for files, slot, future in first:
            if not future.set_running_or_notify_cancel():
                continue  # this process took the batch back while the worker was not up yet
            try:
                _relay(self._executor.submit(_pool_load, files, slot), future)
            except BaseException as error:  # the pool broke: nobody waits on this batch for ever
                future.set_exception(error)
                raise

    def submit(self, files: list[str], slot: int) -> Future[Batch]:
        """Hand a batch to the pool; its pixels will be in `slot`."""
        return self._executor.submit(_pool_load, files, slot)

    def ready(self) -> bool:
        """Whether the pool's first worker is up (and its first batches handed to it); raises if it failed."""
        if not self._started.done():
            return False
        self._started.result()
        return True

    def close(self) -> None:
        """Wait for the start to end, then stop the workers (batches not started are dropped)."""
        wait([self._started])
        self._starter.shutdown()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _relay(source: Future[Batch], target: Future[Batch]) -> None:
    """Settle `target` (running) as `source` settles."""

    def settle(done: Future[Batch]) -> None:
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(done.result())

    source.add_done_callback(settle)


def pool_depth(left: int, pool_workers: int) -> int:
    """Batches the pool may hold unfinished when `left` batches are neither decoded nor taken by this
    process: QUEUED_PER_WORKER per worker, but near the end no more than the pool's share of what is
    left (at least one per worker), so this process is not left waiting on a full queue once the
    batches nobody has taken run out."""
    share = left * pool_workers // (pool_workers + 1)
    return max(pool_workers, min(QUEUED_PER_WORKER * pool_workers, share))


def _shared_decode(batches: list[list[str]], submit: Callable[[list[str], int], Future[Batch]],
                   decode_here: Callable[[list[str]], Batch], ring: np.ndarray,
                   pool_workers: int, pool_ready: Callable[[], bool] = lambda: True,
                   first: dict[int, tuple[Future[Batch], int]] | None = None) -> Iterator[Batch]:
    """Batches in order, each decoded by the pool (into a ring slot) or by this process, whichever is free.

    Batches are handed out in order: the pool's queue is kept QUEUED_PER_WORKER deep per worker
    (shallower near the end: pool_depth),
    and whenever the batch due next is still in the pool, this process takes the next batch nobody
    has (up to OWN_AHEAD_BATCHES ahead) instead of waiting.

    Args:
        submit: hands (files, ring slot) to the pool; the future's batch has its pixels in that slot.
        decode_here: decodes a batch in this process.
        pool_ready: whether the pool has started; until then it is handed nothing more, and this process
            decodes every batch it comes to, taking back those of `first` the pool has not begun.
        first: batches 0, 1, ... handed to the pool as it started: batch -> (future, ring slot).
    """
    n = len(batches)
    in_pool: dict[int, tuple[Any, int]] = dict(first or {})  # batch -> (future, ring slot)
    taken = {slot for _, slot in in_pool.values()}
    free_slots = deque(slot for slot in range(len(ring)) if slot not in taken)
    own: dict[int, Batch] = {}  # decoded here ahead of their turn
    handed = len(in_pool)  # batches [0, handed) have a decoder

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
        if i in in_pool and not pool_ready() and in_pool[i][0].cancel():  # the pool has no worker yet
            free_slots.append(in_pool.pop(i)[1])
            yield decode_here(batches[i])
            continue
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
