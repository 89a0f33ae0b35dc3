"""S3 objects read ahead of their decoder: many GETs in flight, the bytes handed out in the order asked, bounded."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from longtail import storage
from longtail.storage import S3Settings

log = logging.getLogger(__name__)

# Objects started and not yet taken (in flight or read), per process, at most: two batches of 64.
READ_AHEAD_FILES = 128
# No GET starts while the objects read and not yet taken hold this many bytes, per process. Each one
# in flight may add its own size on top (at most the caller's max_bytes), so the most held is this
# plus max_concurrency objects; 256-px JPEGs (10 KB) never come near it.
READ_AHEAD_BYTES = 32 * 2**20


class _Read:
    """One object asked for: its bytes (or what reading it raised) once done."""

    __slots__ = ("uri", "started", "done", "dropped", "data", "error")

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.started = self.done = self.dropped = False
        self.data: bytes = b""
        self.error: BaseException | None = None


class ReadAhead:
    """Reads S3 objects on settings.max_concurrency threads, in the order they are wanted, and hands
    their bytes out in that order (take).

    A decoder wants a batch's objects, and those of the batches queued behind it, and takes them one
    by one as it decodes: the GETs run while it decodes, so it waits on the network only when the
    network is slower than it. Every GET is storage.read_object (one call within the network
    deadline, its retries included); the threads share the process's one store, and its connection
    pool. The threads are daemons, so a GET still waiting on a dead endpoint never holds the
    process's exit once the error is shown.
    """

    def __init__(self, settings: S3Settings, max_bytes: int | None) -> None:
        self._settings, self._max_bytes = settings, max_bytes
        lock = threading.Lock()
        # Two conditions on one lock, so a wake-up goes only to who can act on it: a read thread when a
        # GET may start, the taker when an object is read (notify_all on one condition would wake all
        # 16 threads on every object, their GIL hand-offs costing the decoder more than the GETs do).
        self._lock = threading.Condition(lock)  # the taker waits on it
        self._startable = threading.Condition(lock)  # the read threads wait on it
        self._wanted: deque[_Read] = deque()  # wanted and not taken, in order; the head is taken next
        self._names: set[str] = set()  # their URIs
        self._queued: deque[_Read] = deque()  # wanted and not started, in order
        self._out = 0  # started and not taken (or dropped)
        self._held = 0  # bytes read and not taken
        self._in_flight = 0
        self.peak_in_flight = 0  # the most GETs in flight at once so far
        self._retries = 0  # retries of its GETs so far; the first one is logged
        self._closed = False
        for n in range(settings.max_concurrency):
            threading.Thread(target=self._work, daemon=True, name=f"longtail-s3-read-{n}").start()

    def want(self, uris: list[str]) -> None:
        """Read these objects, after those already wanted; one wanted and not yet taken is not read twice."""
        with self._lock:
            for uri in uris:
                if uri not in self._names:
                    self._want_locked(uri)

    def take(self, uri: str) -> bytes:
        """The bytes of `uri`, the next wanted object, once read; raises what reading it raised
        (storage.ObjectNotFound, ReadRefused, StorageError). Objects wanted before it and not taken
        are dropped (a batch given up half-way)."""
        with self._lock:
            if uri not in self._names:
                self._want_locked(uri)
            while self._wanted[0].uri != uri:
                self._drop(self._wanted.popleft())
            read = self._wanted[0]
            while not read.done:
                if self._closed and not read.started:
                    raise RuntimeError(f"S3 reads closed before {uri} was read")
                self._lock.wait()
            self._wanted.popleft()
            self._names.discard(uri)
            self._out -= 1
            self._held -= len(read.data)
            if self._may_start():
                self._startable.notify()
        if read.error is not None:
            raise read.error
        return read.data

    def close(self) -> None:
        """Start no more GETs and let the threads end (a GET in flight finishes within its deadline)."""
        with self._lock:
            self._closed = True
            self._queued.clear()
            self._startable.notify_all()
            self._lock.notify_all()

    def _want_locked(self, uri: str) -> None:
        read = _Read(uri)
        self._wanted.append(read)
        self._queued.append(read)
        self._names.add(uri)
        self._startable.notify()

    def _drop(self, read: _Read) -> None:
        self._names.discard(read.uri)
        read.dropped = True
        if not read.started:
            self._queued.remove(read)
        elif read.done:
            self._out -= 1
            self._held -= len(read.data)
            self._startable.notify()
        # A read in flight is counted out when its thread finds it dropped.

    def _warn(self, msg: str, *args: Any) -> None:
        """Log the first retry only: with 16 GETs in flight, an endpoint that goes away would
        otherwise log two lines per GET before the one-line error."""
        with self._lock:
            self._retries += 1
            if self._retries > 1:
                return
        log.warning(msg + " (further retries of this process's reads are not logged)", *args)

    def _wanted_head(self) -> _Read | None:
        return self._wanted[0] if self._wanted else None

    def _may_start(self) -> bool:
        """Whether a GET may start: one is queued, and the objects read ahead are within both bounds.
        Those held were wanted before any queued one, so taking them always makes room: no deadlock."""
        return bool(self._queued) and self._out < READ_AHEAD_FILES and self._held < READ_AHEAD_BYTES

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._may_start():
                    self._startable.wait()
                if self._closed:
                    return
                read = self._queued.popleft()
                read.started = True
                self._out += 1
                self._in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            try:
                data, error = storage.read_object(read.uri, self._settings, max_bytes=self._max_bytes,
                                                  warn=self._warn), None
            except BaseException as e:  # noqa: B036 - raised again in the taker's thread
                data, error = b"", e
            with self._lock:
                self._in_flight -= 1
                read.done = True
                if read.dropped:
                    self._out -= 1
                else:
                    read.data, read.error = data, error
                    self._held += len(data)
                if read is self._wanted_head():
                    self._lock.notify()  # this thread itself starts the next GET, if one may start
