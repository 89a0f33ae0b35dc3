"""S3 reads ahead of the decoder: order, bounds, errors and drops, with storage.read_object stood in for (no network)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from longtail import s3_read_ahead, storage
from longtail.s3_read_ahead import ReadAhead
from longtail.storage import S3Settings


class FakeStore:
    """storage.read_object: each read takes `delay` s and returns the URI as bytes (or
    raises what `errors` names), counting the reads in flight."""

    def __init__(self, delay: float = 0.01, size: int = 0, errors: dict[str, Exception] | None = None) -> None:
        self.delay, self.size, self.errors = delay, size, errors or {}
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.read: list[str] = []

    def __call__(self, uri: str, s3: S3Settings, *, max_bytes: int | None = None, warn: Any = None) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.read.append(uri)
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1
        if uri in self.errors:
            raise self.errors[uri]
        return uri.encode().ljust(self.size, b"\0")


@pytest.fixture
def store(monkeypatch) -> FakeStore:
    fake = FakeStore()
    monkeypatch.setattr(storage, "read_object", fake)
    return fake


def settle(store: FakeStore, at_least: int) -> None:
    """Wait until `at_least` reads have started, then a while longer for any that should not."""
    deadline = time.monotonic() + 10
    while len(store.read) < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.15)


def uris(n: int, prefix: str = "a") -> list[str]:
    return [f"s3://bkt/{prefix}/{i:04d}.jpg" for i in range(n)]


def test_objects_come_back_in_order_read_many_at_a_time(store):
    reads = ReadAhead(S3Settings(max_concurrency=8), max_bytes=None)
    wanted = uris(64)
    started = time.perf_counter()
    reads.want(wanted)
    assert [reads.take(u) for u in wanted] == [u.encode() for u in wanted]
    elapsed = time.perf_counter() - started
    reads.close()
    assert store.peak == 8 == reads.peak_in_flight  # the bound, reached
    assert elapsed < 64 * store.delay / 2  # one at a time would take 0.64 s
    assert sorted(store.read) == wanted  # each once


def test_an_object_wanted_twice_is_read_once_and_take_alone_reads_it(store):
    reads = ReadAhead(S3Settings(max_concurrency=4), max_bytes=None)
    first, second = uris(8, "one"), uris(8, "two")
    reads.want(first)
    reads.want(second)
    reads.want(first)  # a worker's load_batch asks again for what it asked for ahead
    assert [reads.take(u) for u in first + second] == [u.encode() for u in first + second]
    assert reads.take("s3://bkt/alone.jpg") == b"s3://bkt/alone.jpg"  # never wanted: read on demand
    reads.close()
    assert sorted(store.read) == sorted([*first, *second, "s3://bkt/alone.jpg"])


def test_read_ahead_stops_at_its_count_and_byte_bounds(store, monkeypatch):
    monkeypatch.setattr(s3_read_ahead, "READ_AHEAD_FILES", 10)
    reads = ReadAhead(S3Settings(max_concurrency=4), max_bytes=None)
    reads.want(uris(50))
    settle(store, 10)
    assert len(store.read) == 10  # nothing taken: no more started
    reads.take(uris(50)[0])
    settle(store, 11)
    assert len(store.read) == 11
    reads.close()

    monkeypatch.setattr(s3_read_ahead, "READ_AHEAD_FILES", 1000)
    monkeypatch.setattr(s3_read_ahead, "READ_AHEAD_BYTES", 5000)
    store.size, store.read = 1000, []
    reads = ReadAhead(S3Settings(max_concurrency=2), max_bytes=None)
    reads.want(uris(50, "b"))
    settle(store, 5)
    # Starts stop once 5,000 bytes are held; the two in flight then may add theirs.
    assert 5 <= len(store.read) <= 6
    assert [len(reads.take(u)) for u in uris(50, "b")] == [1000] * 50  # taking makes room again
    reads.close()


def test_a_failed_read_is_raised_to_the_taker_in_its_turn(store):
    gone = uris(6)[3]
    store.errors = {gone: storage.StorageError("cannot read: endpoint unreachable")}
    reads = ReadAhead(S3Settings(max_concurrency=4), max_bytes=None)
    reads.want(uris(6))
    assert [reads.take(u) for u in uris(6)[:3]] == [u.encode() for u in uris(6)[:3]]
    with pytest.raises(storage.StorageError, match="endpoint unreachable"):
        reads.take(gone)
    assert reads.take(uris(6)[4]) == uris(6)[4].encode()
    reads.close()


def test_a_batch_given_up_half_way_is_dropped_and_the_bounds_hold(store, monkeypatch):
    monkeypatch.setattr(s3_read_ahead, "READ_AHEAD_FILES", 8)
    reads = ReadAhead(S3Settings(max_concurrency=4), max_bytes=None)
    batch, next_batch = uris(20, "x"), uris(20, "y")
    reads.want(batch)
    reads.take(batch[0])
    reads.want(next_batch)
    # The rest of the first batch is never taken (it failed in the decoder): its reads are dropped,
    # counted out of the bounds, and the next batch still comes through whole.
    assert [reads.take(u) for u in next_batch] == [u.encode() for u in next_batch]
    reads.close()
    assert all(u not in store.read for u in batch[10:])  # never started: the count bound held them back


def test_map_concurrently_keeps_the_order_and_raises_the_first_error():
    assert storage.map_concurrently(lambda x: x * x, range(20), 4) == [x * x for x in range(20)]
    assert storage.map_concurrently(lambda x: x, [], 4) == []

    def fail_on_3(x: int) -> int:
        if x == 3:
            raise storage.StorageError("cannot list s3://bkt/3/")
        time.sleep(0.01)
        return x

    with pytest.raises(storage.StorageError, match="bkt/3"):
        storage.map_concurrently(fail_on_3, range(50), 4)


def test_settings_refuse_a_concurrency_below_one():
    assert S3Settings().max_concurrency == 16
    for bad in (0, -1, True, 2.5):
        with pytest.raises(storage.StorageError, match="max_concurrency must be an int >= 1"):
            S3Settings(max_concurrency=bad)


def test_only_the_first_retry_of_many_reads_is_logged(monkeypatch, caplog):
    """An endpoint gone away: each of the GETs in flight retries, and one line says so, not two per GET."""

    def retrying(uri: str, s3: S3Settings, *, max_bytes: int | None = None, warn: Any = None) -> bytes:
        for delay in (0.4, 0.8):
            warn("%s %s failed (%s), retrying in %.1fs", "read", uri, "ConnectionError", delay)
        return b"x"

    monkeypatch.setattr(storage, "read_object", retrying)
    reads = ReadAhead(S3Settings(max_concurrency=8), max_bytes=None)
    reads.want(uris(40))
    assert [reads.take(u) for u in uris(40)] == [b"x"] * 40
    reads.close()
    logged = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(logged) == 1 and "further retries of this process's reads are not logged" in logged[0]
