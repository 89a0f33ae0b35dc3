"""Ingest's decoding, in order: batches of files handed to this process and to a pool of processes.

Only numpy and the standard library here: the decoders themselves (OpenCV, Pillow, the readers) are in
decode_worker, which the pool's fork server imports once and this process imports only when it starts
decoding. So ingest can start the pool, and hand it its first batches, as soon as it has planned its
files, and the pool decodes them while this process is still loading OpenCV and h5py.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from longtail import decode_server
from longtail.decode_server import POOL_MIN_FILES
from longtail.decoded_batch import Batch

if TYPE_CHECKING:
    from concurrent.futures import Future
    from multiprocessing.connection import Connection

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

    The pool is neither a multiprocessing.Pool nor a ProcessPoolExecutor but processes with a pipe of
    tasks and a pipe of results each, which this process's own thread writes and reads when it needs to
    (_Worker). Pool's worker-handler thread spins while a result waits unread; an executor wakes a
    manager thread and a feeder thread in this process for every batch, and each takes the GIL and a
    core from the decoding: on 2 cores, 20k JPEGs took 1.69 s with an executor and 1.57 s with the
    pipes (6 alternating rounds, medians). Pixels come back through a ring of shared slots, not
    pickled through the result pipe (245 MB for 20k images at 64 px), and not copied out either: a
    batch's pixels may be a view of its slot, valid until the caller asks for the next batch, when the
    slot is handed out again. The slots also bound the read-ahead and its memory.
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
        """Stop decoding and end the pool's workers (at once if a batch is still out: it is dropped)."""
        self._iterator.close()  # a started iteration closes the pool itself (its finally)
        if self._pool is not None:  # one never started has not: the pool runs from __init__ on
            self._pool.close()

    def _decoded(self) -> Iterator[Batch]:
        # Only now the decoders: the pool has its first batches already.
        from longtail import decode_worker

        if self._pool is None:
            decode_worker.init(self._settings, self._s3, single_thread=False)
            try:
                yield from map(decode_worker.load_batch, self._batches)
            finally:
                decode_worker.close_reads()
            return
        threads = decode_worker.opencv_threads()
        decode_worker.init(self._settings, self._s3, single_thread=True)  # beside the pool: one thread each
        try:
            yield from _shared_decode(self._batches, self._pool.submit, decode_worker.load_batch, self._pool.ring,
                                      self._pool.workers, self._pool.ready, self._pool.first)
        finally:
            self._pool.close()
            decode_worker.close_reads()
            decode_worker.opencv_threads(threads)


def _pool_worker(tasks: Connection, results: Connection, *init_args: Any) -> None:
    """A pool worker: decodes each (files, slot) it is sent into its slot of the ring and sends the batch
    back (or what it raised), in order, until its pipe of tasks is closed.

    The tasks queued behind the one it decodes are read from the pipe as they come, and their S3
    objects asked for at once (decode_worker.read_ahead), so they are on their way while it decodes.

    Run in the fork server's child, which has loaded decode_worker already; it is imported here so that
    the process starting the pool need not load the decoders first.
    """
    from longtail import decode_worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the ingest's to handle: it stops the pool
    decode_worker.init(*init_args)
    queued: deque[tuple[list[str], int]] = deque()
    ended = False  # the pipe of tasks is closed: every batch sent is queued, or the ingest stopped
    while True:
        while not ended and (not queued or tasks.poll()):
            try:
                task = tasks.recv()
            except EOFError:
                ended = True
                break
            queued.append(task)
            decode_worker.read_ahead(task[0])
        if not queued:
            decode_worker.close_reads()
            return
        files, slot = queued.popleft()
        try:
            message: Batch | _Failure = decode_worker.load_batch(files, slot)
        except Exception as error:  # an S3 endpoint gone, or a bug: the ingest raises it
            message = _Failure(error)
        try:
            results.send(message)
        except OSError:
            return  # the ingest is gone


class _Failure:
    """What a worker raised on a batch: the exception (or its repr, when it does not pickle) and its traceback."""

    def __init__(self, error: Exception) -> None:
        self.trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            pickle.dumps(error)
            self.error: Exception = error
        except Exception:
            self.error = RuntimeError(repr(error))


class WorkerTraceback(Exception):
    """The traceback of a pool worker's exception, as its __cause__ (concurrent.futures does the same)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


# A pool batch's states.
_WAITING, _SENT, _DONE, _TAKEN_BACK = range(4)


class PoolBatch:
    """A batch handed to a pool worker, read back from its pipe when asked for: done() and result() as
    a concurrent.futures.Future has them, and cancel() to take back one not yet sent."""

    __slots__ = ("_worker", "_state", "_value")

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._state = _WAITING
        self._value: Batch | _Failure | None = None

    def cancel(self) -> bool:
        """Take the batch back, if it was not sent to its worker yet (its pool is still starting)."""
        with self._worker.lock:
            if self._state != _WAITING:
                return False
            self._state = _TAKEN_BACK
            return True

    def done(self) -> bool:
        """Whether the batch is back (or taken back); reads what its worker has sent, without waiting."""
        if self._state == _SENT:
            self._worker.receive(wait=False)
        return self._state in (_DONE, _TAKEN_BACK)

    def result(self) -> Batch:
        """The batch, once its worker has sent it back; raises what the worker raised."""
        while self._state == _WAITING:
            self._worker.pool_started()
        while self._state == _SENT:
            self._worker.receive(wait=True)
        if isinstance(self._value, _Failure):
            raise self._value.error from WorkerTraceback(self._value.trace)
        if self._value is None:
            raise RuntimeError("a batch taken back from the pool has no result")
        return self._value


class _Worker:
    """One pool process from the fork server, with a pipe of tasks to it and one of batches back.

    This process's own thread writes the tasks and reads the batches, when it needs them: no feeder or
    manager thread wakes up on every batch (as in a ProcessPoolExecutor), and a worker's batch waits in
    its pipe until it is asked for. Its batches come back in the order they were sent.
    """

    def __init__(self, ctx: Any, init_args: tuple[Any, ...], pool_started: Callable[[], None]) -> None:
        self._tasks_theirs, self._tasks = ctx.Pipe(duplex=False)
        self._results, self._results_theirs = ctx.Pipe(duplex=False)
        for end in (self._tasks, self._results):
            _widen(end)
        self.process = ctx.Process(target=_pool_worker, args=(self._tasks_theirs, self._results_theirs, *init_args),
                                   daemon=True, name="longtail-decoder")
        self.pool_started = pool_started
        self.lock = threading.Lock()
        self.sent: deque[PoolBatch] = deque()  # sent and not yet back, in order
        self.started = False

    def start(self) -> None:
        """Fork the process (once the fork server is up: this waits for it); its ends of the pipes are then its own."""
        self.process.start()
        self.started = True
        self._tasks_theirs.close()
        self._results_theirs.close()  # so a worker that dies is an end of file, not a wait for ever

    def send(self, batch: PoolBatch, files: list[str], slot: int) -> bool:
        """Send `files` to decode into `slot`, unless the batch was taken back meanwhile."""
        with self.lock:
            if batch._state != _WAITING:
                return False
            batch._state = _SENT
            self.sent.append(batch)
        try:
            self._tasks.send((files, slot))
        except OSError:  # its end of the pipe is closed: it died
            raise self._died() from None
        return True

    def _died(self) -> RuntimeError:
        self.process.join(timeout=5)
        return RuntimeError(f"a decoding worker (pid {self.process.pid}) stopped with exit code "
                            f"{self.process.exitcode} before it sent back its batches")

    def receive(self, wait: bool) -> None:
        """Settle the batches sent with what the worker has sent back, in order: every one that is there,
        after waiting for the oldest if `wait`."""
        while self.sent and (wait or self._results.poll()):
            try:
                message = self._results.recv()
            except EOFError:  # its end of the pipe is closed: it died
                raise self._died() from None
            batch = self.sent.popleft()
            batch._value, batch._state = message, _DONE
            wait = False

    def stop(self, now: bool) -> None:
        """End the worker: once it has read what was sent (its pipe closed), or `now` (SIGTERM)."""
        self._tasks.close()
        if self.started:
            if now:
                self.process.terminate()
            self.process.join()
        else:
            self._tasks_theirs.close()
            self._results_theirs.close()
        self._results.close()


def _widen(end: Connection) -> None:
    """Give a pipe 1 MiB (Linux; elsewhere the default stays): a worker's batches back and this process's
    tasks to it then never both fill their pipes, with each side waiting on the other."""
    try:
        import fcntl

        fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, 2**20)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        pass


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
        # Workers take this process's AWS_* values (decode_worker.init says why).
        aws_environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        init_args = (settings, s3, True, aws_environ, ring_memory, shape)
        self._workers = [_Worker(ctx, init_args, self._wait_started) for _ in range(workers)]
        # The first batches are the pool's from the start, batch i in slot i (round the workers): it decodes
        # them while this process is still loading the decoders and the HDF5 writer.
        self.first: dict[int, tuple[PoolBatch, int]] = {
            i: (PoolBatch(self._workers[i % workers]), i) for i in range(min(pool_depth(len(batches), workers), len(batches)))
        }
        # Each worker forks once the fork server has imported the decoders: that wait happens on a thread.
        first = [(batch, batches[i], slot) for i, (batch, slot) in self.first.items()]
        self._starter = threading.Thread(target=self._start, args=(first,), name="longtail-pool-start", daemon=True)
        self._start_error: BaseException | None = None
        self._starter.start()

    def _start(self, first: list[tuple[PoolBatch, list[str], int]]) -> None:
        try:
            for worker in self._workers:
                worker.start()
            for batch, files, slot in first:
                batch._worker.send(batch, files, slot)  # not if this process took the batch back meanwhile
        except BaseException as error:
            self._start_error = error

    def _wait_started(self) -> None:
        self._starter.join()
        if self._start_error is not None:
            raise RuntimeError(f"the decoding pool did not start: {self._start_error}") from self._start_error

    def ready(self) -> bool:
        """Whether the pool's workers are up (and its first batches sent to them); raises if it failed."""
        if self._starter.is_alive():
            return False
        self._wait_started()
        return True

    def submit(self, files: list[str], slot: int) -> PoolBatch:
        """Hand a batch to the worker with the fewest batches outstanding; its pixels will be in `slot`."""
        worker = min(self._workers, key=lambda w: len(w.sent))
        batch = PoolBatch(worker)
        worker.send(batch, files, slot)
        return batch

    def close(self) -> None:
        """Stop the workers: at once if a batch sent is still outstanding (dropped), else once they read the end."""
        self._starter.join()
        outstanding = any(w.sent for w in self._workers)
        for worker in self._workers:
            worker.stop(now=outstanding)


def pool_depth(left: int, pool_workers: int) -> int:
    """Batches the pool may hold unfinished when `left` batches are neither decoded nor taken by this
    process: QUEUED_PER_WORKER per worker, but near the end no more than the pool's share of what is
    left (at least one per worker), so this process is not left waiting on a full queue once the
    batches nobody has taken run out."""
    share = left * pool_workers // (pool_workers + 1)
    return max(pool_workers, min(QUEUED_PER_WORKER * pool_workers, share))


def _shared_decode(batches: list[list[str]], submit: Callable[[list[str], int], PoolBatch | Future[Batch]],
                   decode_here: Callable[[list[str]], Batch], ring: np.ndarray,
                   pool_workers: int, pool_ready: Callable[[], bool] = lambda: True,
                   first: dict[int, tuple[PoolBatch, int]] | dict[int, tuple[Future[Batch], int]] | None = None,
                   ) -> Iterator[Batch]:
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
