"""The storage layer on local paths, its settings, and its errors (the S3 side runs in tests/integration)."""

from __future__ import annotations

import os
import socket

import pytest

from longtail import storage
from longtail.errors import StorageError
from longtail.storage import ObjectNotFound, S3Settings


def test_settings_come_from_the_environment_mapping_given():
    assert S3Settings.from_env({}) == S3Settings()
    env = {"MLFLOW_S3_ENDPOINT_URL": "http://mlflow-s3:9000", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert S3Settings.from_env(env) == S3Settings(endpoint_url="http://mlflow-s3:9000", region="eu-west-1")
    env["AWS_ENDPOINT_URL"] = "http://aws:9000"
    assert S3Settings.from_env(env).endpoint_url == "http://aws:9000"
    env["S3_ENDPOINT_URL"] = "http://minio:9000"
    env["AWS_REGION"] = "us-east-2"
    assert S3Settings.from_env(env) == S3Settings(endpoint_url="http://minio:9000", region="us-east-2")
    hash(S3Settings())  # a value: usable as a cache key and picklable for worker processes


def test_s3_uris():
    assert storage.split_s3("s3://bkt/a/b.png") == ("bkt", "a/b.png")
    assert storage.split_s3("s3://bkt") == ("bkt", "")
    assert storage.join("s3://bkt/pre/", "x/y.h5") == "s3://bkt/pre/x/y.h5"
    with pytest.raises(StorageError, match="no bucket"):
        storage.split_s3("s3:///key")


def test_local_list_read_write(tmp_path):
    storage.write_bytes(str(tmp_path / "a" / "b" / "c.bin"), b"123")
    storage.write_bytes(str(tmp_path / "top.txt"), b"")
    storage.write_bytes(str(tmp_path / ".hidden"), b"x")
    listed = storage.list_files(str(tmp_path))
    assert [(f.relative, f.refused) for f in listed] == [(".hidden", ""), ("a/b/c.bin", ""), ("top.txt", "")]
    assert storage.read_bytes(listed[1].uri) == b"123"
    assert storage.exists(str(tmp_path / "top.txt")) and not storage.exists(str(tmp_path / "nope"))
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1000))
    storage.write_file(src, str(tmp_path / "copy" / "dst.bin"))
    assert (tmp_path / "copy" / "dst.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 100_000])
@pytest.mark.parametrize("max_bytes", [None, 100_000, 10**9])
def test_a_local_read_returns_exactly_the_file(tmp_path, size, max_bytes):
    content = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(content)
    assert storage.read_bytes(str(tmp_path / "f.bin"), max_bytes=max_bytes) == content


def test_a_local_read_is_refused_over_its_bound_before_reading(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x" * 101)
    with pytest.raises(storage.ReadRefused, match="over the"):
        storage.read_bytes(str(tmp_path / "f.bin"), max_bytes=100)


def test_local_errors_name_the_path(tmp_path):
    with pytest.raises(ObjectNotFound, match=f"file not found: {tmp_path}/missing"):
        storage.read_bytes(str(tmp_path / "missing"))
    with pytest.raises(StorageError, match="folder not found"):
        storage.list_files(str(tmp_path / "missing"))


def test_local_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "ingest.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"old"  # the old content survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ingest.json"]  # no temporary file left


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sent_requests(settings: S3Settings) -> list[str]:
    """Every HTTP try the (cached) client for `settings` makes from now on, botocore's retries included."""
    sent: list[str] = []
    storage.s3_client(settings).meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    return sent


def test_unreachable_endpoint_is_a_bounded_clear_error_without_credentials(monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSENTINEL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-sentinel-value")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    settings = S3Settings(endpoint_url=endpoint, max_attempts=2, connect_timeout=1)
    sent = sent_requests(settings)
    with pytest.raises(StorageError) as err:
        storage.read_bytes("s3://some-bucket/raw/img.png", settings)
    # Bounded by count, not by the clock: 3 attempts of ours with 2 waits between, each attempt the
    # max_attempts HTTP tries, the first included (botocore's total_max_attempts), as attempt_worst_s counts them.
    assert len(sent) == 3 * settings.max_attempts, sent
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 2
    message = str(err.value)
    assert "s3://some-bucket/raw/img.png" in message and endpoint in message
    assert "unreachable after 3 attempts" in message and "S3_ENDPOINT_URL" in message
    assert "SENTINEL" not in message.upper()


def without_credentials(monkeypatch, tmp_path) -> S3Settings:
    """No AWS credentials anywhere boto3 or obstore would look; settings for a closed local port."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return S3Settings(endpoint_url=f"http://127.0.0.1:{closed_port()}", region="us-east-1")


def test_missing_credentials_say_which_variables(monkeypatch, tmp_path):
    settings = without_credentials(monkeypatch, tmp_path)
    with pytest.raises(StorageError, match="no S3 credentials found; set AWS_ACCESS_KEY_ID"):
        storage.list_files("s3://bkt/prefix", settings)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not hasattr(os, "mkfifo"), reason="POSIX only")
def test_prefetch_asks_the_kernel_for_regular_local_files_only(tmp_path, monkeypatch):
    """Whether the kernel then reads ahead is the page cache's business, which a test cannot see
    without root; what is checked is which files it is asked for (os.posix_fadvise recorded), and
    that nothing it meets raises."""
    images = [tmp_path / f"{i}.jpg" for i in range(3)]
    for p in images:
        p.write_bytes(b"\xff\xd8 not much of a JPEG")
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # opened without blocking, and not advised: a FIFO is never read ahead
    (tmp_path / "folder.jpg").mkdir()
    asked: list[str] = []
    real = os.posix_fadvise

    def advise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED and (offset, length) == (0, 0)
        asked.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", advise)
    uris = [str(p) for p in images] + [str(fifo), str(tmp_path / "folder.jpg"), str(tmp_path / "missing.jpg"),
                                       "s3://bucket/key.jpg", "bad\x00path"]
    storage.prefetch(uris)
    assert asked == [str(p) for p in images]
    assert [storage.read_bytes(str(p)) for p in images] == [p.read_bytes() for p in images]  # untouched


def test_an_object_read_through_obstore_is_bounded_and_clear_when_the_endpoint_is_down(monkeypatch, caplog):
    """Ingest's GETs (storage.read_object) keep read_bytes' promises: 3 attempts within the deadline,
    a one-line error naming the object and the endpoint, and no credential in it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSENTINEL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-sentinel-value")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    settings = S3Settings(endpoint_url=endpoint, max_attempts=2, connect_timeout=1, region="us-east-1")
    with pytest.raises(StorageError) as err:
        storage.read_object("s3://some-bucket/raw/img.png", settings, max_bytes=1000)
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 2
    message = str(err.value)
    assert "s3://some-bucket/raw/img.png" in message and endpoint in message
    assert "unreachable after 3 attempts" in message and "\n" not in message
    assert "SENTINEL" not in message.upper()


def test_an_object_read_through_obstore_without_credentials_says_which_variables(monkeypatch, tmp_path):
    settings = without_credentials(monkeypatch, tmp_path)
    with pytest.raises(StorageError, match="no S3 credentials found; set AWS_ACCESS_KEY_ID"):
        storage.read_object("s3://bkt/a.jpg", settings)
