"""Ingest from a folder, a CSV manifest and an S3 prefix (moto server process): same images, same result."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest

from longtail import decode_pool, s3_read_ahead, split_sink, storage
from longtail.datasets import DEBIAN_FASHION_MNIST, make_digits_lt, make_fashion_mnist_lt
from longtail.errors import StorageError
from longtail.ingest import ingest
from longtail.splits import read_arrays, read_info
from longtail.storage import S3Settings

# Every test here talks to a real S3 server process (SeaweedFS, or moto for fault injection).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    """A few hundred real Fashion-MNIST PNGs in class folders (or digits where the package is missing)."""
    out = tmp_path_factory.mktemp("fashion") / "f"
    if DEBIAN_FASHION_MNIST.is_dir():
        make_fashion_mnist_lt(out, imbalance=10, n_max=60, test_per_class=3)
    else:
        make_digits_lt(out, imbalance=10)
    return out / "train"


def upload_folder(folder: Path, bucket: str, prefix: str, endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def write_manifest(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def same_splits(a: Path, b: Path) -> None:
    for split in ("train", "val"):
        x, y = read_arrays(a / f"{split}.h5"), read_arrays(b / f"{split}.h5")
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and x[2] == y[2]


def test_folder_csv_and_s3_prefix_give_the_same_splits(fashion, tmp_path, s3_server, s3_bucket):
    s3 = S3Settings(endpoint_url=s3_server)
    folder = ingest(str(fashion), tmp_path / "folder", image_size=16, seed=2)

    # The same images through a CSV manifest (paths relative to the CSV), with one row whose file is gone.
    rows = [(p.relative_to(fashion).as_posix(), p.parent.name) for p in sorted(fashion.rglob("*.png"))]
    listed = tmp_path / "listed"
    for rel, _ in rows:
        (listed / rel).parent.mkdir(parents=True, exist_ok=True)
        (listed / rel).write_bytes((fashion / rel).read_bytes())
    manifest = write_manifest(listed, [*rows, ("coat/gone.png", "coat")])
    via_csv = ingest(str(manifest), tmp_path / "csv", image_size=16, seed=2)
    assert via_csv["rejected"] == [{"path": "coat/gone.png", "reason": "listed in the manifest but not found"}]

    # The same images from an S3 prefix, read by worker processes with their own clients.
    upload_folder(fashion, s3_bucket, "raw/train", s3_server)
    via_s3 = ingest(f"s3://{s3_bucket}/raw/train", tmp_path / "s3", image_size=16, seed=2, s3=s3, workers=2)

    for result in (via_csv, via_s3):
        assert result["class_counts"] == folder["class_counts"] and result["splits"] == folder["splits"]
        assert result["source_fingerprint"] == folder["source_fingerprint"]  # relative paths + bytes only
    same_splits(tmp_path / "folder", tmp_path / "csv")
    same_splits(tmp_path / "folder", tmp_path / "s3")
    assert read_info(tmp_path / "s3" / "train.h5").source_fingerprint == folder["source_fingerprint"]


def test_s3_objects_are_read_many_at_a_time_with_the_same_errors(fashion, tmp_path, s3_server, s3_bucket,
                                                                 monkeypatch, seaweedfs):
    """Ingest reads a batch's objects concurrently (storage.read_object, on the read-ahead's threads):
    more than one GET in flight, the bytes boto3 reads, and its errors, with no key in any message."""
    s3 = S3Settings(endpoint_url=s3_server, max_concurrency=4)
    upload_folder(fashion, s3_bucket, "many", s3_server)
    peaks: list[int] = []
    real_close = s3_read_ahead.ReadAhead.close

    def close(self):
        peaks.append(self.peak_in_flight)
        real_close(self)

    monkeypatch.setattr(s3_read_ahead.ReadAhead, "close", close)
    via_s3 = ingest(f"s3://{s3_bucket}/many", tmp_path / "s3", image_size=16, s3=s3, workers=1)
    assert peaks and 1 < max(peaks) <= 4  # concurrent, within the bound
    assert via_s3["source_fingerprint"] == ingest(str(fashion), tmp_path / "local", image_size=16)["source_fingerprint"]

    one = next(p for p in sorted(fashion.rglob("*.png")))
    uri = f"s3://{s3_bucket}/many/{one.relative_to(fashion).as_posix()}"
    assert storage.read_object(uri, s3) == storage.read_bytes(uri, s3) == one.read_bytes()
    with pytest.raises(storage.ObjectNotFound, match="NoSuchKey"):
        storage.read_object(f"s3://{s3_bucket}/many/gone.png", s3)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        storage.read_object("s3://no-such-bucket-x/a.png", s3)
    with pytest.raises(storage.ReadRefused, match="over the"):
        storage.read_object(uri, s3, max_bytes=10)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-sentinel")
    wrong = S3Settings(endpoint_url=s3_server, region="eu-west-3")  # another store: the new secret
    with pytest.raises(StorageError, match="SignatureDoesNotMatch") as err:
        storage.read_object(uri, wrong)
    assert "sentinel" not in str(err.value) and seaweedfs.credentials["AWS_ACCESS_KEY_ID"] not in str(err.value)


def test_s3_manifest_and_s3_output(fashion, tmp_path, s3_server, s3_bucket):
    s3 = S3Settings(endpoint_url=s3_server)
    upload_folder(fashion, s3_bucket, "data", s3_server)
    rows = [(p.relative_to(fashion).as_posix(), p.parent.name) for p in sorted(fashion.rglob("*.png"))][::3]
    buf = io.StringIO()
    csv.writer(buf).writerows([("path", "label"), *rows])
    storage.write_bytes(f"s3://{s3_bucket}/data/manifest.csv", buf.getvalue().encode(), s3)
    result = ingest(f"s3://{s3_bucket}/data/manifest.csv", f"s3://{s3_bucket}/h5", val_fraction=0.25, s3=s3)
    assert result["n_images"] == len(rows)
    keys = sorted(f.relative for f in storage.list_files(f"s3://{s3_bucket}/h5", s3))
    assert keys == ["ingest.json", "train.h5", "val.h5"]
    assert json.loads(storage.read_bytes(f"s3://{s3_bucket}/h5/ingest.json", s3)) == result
    local = tmp_path / "train.h5"
    local.write_bytes(storage.read_bytes(f"s3://{s3_bucket}/h5/train.h5", s3))
    assert read_info(local).n == result["splits"]["train"]


def photo_bytes(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def test_a_folder_salted_with_broken_files(fashion, tmp_path, s3_server, s3_bucket):
    salted = tmp_path / "salted"
    good = sorted(fashion.rglob("*.png"))
    for p in good:
        (salted / p.relative_to(fashion)).parent.mkdir(parents=True, exist_ok=True)
        (salted / p.relative_to(fashion)).write_bytes(p.read_bytes())
    # Real images re-encoded to other containers are kept like the PNGs.
    sample = cv2.imread(str(good[0]))
    cls = good[0].parent.name
    extra_good = {f"{cls}/again.jpg": photo_bytes(sample, ".jpg"), f"{cls}/again.webp": photo_bytes(sample, ".webp"),
                  f"{cls}/again.bmp": photo_bytes(sample, ".bmp"), f"{cls}/again.tiff": photo_bytes(sample, ".tiff")}
    broken = {
        f"{cls}/empty.png": (b"", "empty file"),
        f"{cls}/truncated.jpg": (photo_bytes(cv2.resize(sample, (256, 256)), ".jpg")[:600], "truncated"),
        f"{cls}/truncated.png": (good[1].read_bytes()[:100], "truncated"),
        f"{cls}/notes.jpg": (b"shopping list: milk, eggs\n", "not an image"),
        f"{cls}/random.webp": (bytes(np.random.default_rng(1).integers(0, 256, 999, dtype=np.uint8)), "not an image"),
    }
    ignored = {f"{cls}/notes.txt": b"hello", f"{cls}/.DS_Store": b"\0" * 10, ".hidden/x.png": good[2].read_bytes(),
               "labels.csv": b"a,b\n", f"{cls}/._again.jpg": b"\0\5\26\7"}
    for rel, data in {**extra_good, **{k: v[0] for k, v in broken.items()}, **ignored}.items():
        (salted / rel).parent.mkdir(parents=True, exist_ok=True)
        (salted / rel).write_bytes(data)
    result = ingest(str(salted), tmp_path / "out", workers=2)
    assert result["n_images"] == len(good) + len(extra_good)  # every good one kept
    assert [r["path"] for r in result["rejected"]] == sorted(broken)  # every broken one listed
    for r in result["rejected"]:
        assert broken[r["path"]][1] in r["reason"], r
    assert result["ignored"] == len(ignored)
    ids = read_arrays(tmp_path / "out" / "train.h5")[2] + read_arrays(tmp_path / "out" / "val.h5")[2]
    assert set(extra_good) <= set(ids) and not set(broken) & set(ids)
    # A corrupt object in the bucket is rejected the same way.
    upload_folder(salted, s3_bucket, "salted", s3_server)
    from_s3 = ingest(f"s3://{s3_bucket}/salted", tmp_path / "s3", s3=S3Settings(endpoint_url=s3_server))
    assert from_s3["rejected"] == result["rejected"] and from_s3["n_images"] == result["n_images"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_a_clear_error_and_leaves_nothing(tmp_path, s3_server):
    # An endpoint that takes each connection and closes it unanswered: every HTTP try is counted.
    tries: list[int] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            tries.append(1)
            conn.settimeout(5)
            try:  # the whole request first, so the hang-up is the same on a loaded machine: no reply
                request = b""
                while b"\r\n\r\n" not in request and (chunk := conn.recv(65536)):
                    request += chunk
            except OSError:
                pass
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = S3Settings(endpoint_url=endpoint, max_attempts=2)
    try:
        with pytest.raises(StorageError, match=f"endpoint {endpoint}.*unreachable after 3 attempts"):
            ingest("s3://bkt/raw", tmp_path / "out", s3=settings)
    finally:
        listener.close()
    # Bounded by count, not the clock: the one listing, 3 attempts of at most max_attempts tries each
    # (the client's own retry may stop early; more than the product would mean a retry loop unbounded).
    assert 3 <= len(tries) <= 3 * settings.max_attempts, tries
    assert not (tmp_path / "out").exists()


def test_endpoint_killed_mid_ingest(fashion, tmp_path, monkeypatch, moto_server):
    """The S3 server dies after the first batch: a clear error after bounded retries, no partial HDF5,
    and after a restart the same ingest succeeds with the fingerprint of the local files."""
    server = moto_server
    endpoint = server.url
    s3 = S3Settings(endpoint_url=endpoint, max_attempts=2, connect_timeout=1)

    def populate() -> None:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="raw-images")
        upload_folder(fashion, "raw-images", "train", endpoint)

    populate()
    real_add = split_sink.SplitSink.add

    def add_then_kill(self, *args, **kwargs):
        real_add(self, *args, **kwargs)
        server.stop()

    monkeypatch.setattr(decode_pool, "BATCH_FILES", 16)
    monkeypatch.setattr(split_sink.SplitSink, "add", add_then_kill)
    try:
        with pytest.raises(StorageError, match=f"endpoint {endpoint}.*unreachable"):
            ingest("s3://raw-images/train", tmp_path / "out", s3=s3, workers=2)
        # No train.h5/val.h5, no temp files: the folder the failed ingest made is gone with them.
        assert not (tmp_path / "out").exists()
        monkeypatch.setattr(split_sink.SplitSink, "add", real_add)
        server.start()
        populate()  # moto keeps objects in memory: the restarted server starts empty
        again = ingest("s3://raw-images/train", tmp_path / "out", s3=s3, workers=2)
    finally:
        monkeypatch.undo()
    assert again["source_fingerprint"] == ingest(str(fashion), tmp_path / "local")["source_fingerprint"]
    same_splits(tmp_path / "out", tmp_path / "local")


def test_cli_reads_the_endpoint_from_the_environment(fashion, tmp_path, s3_server, s3_bucket):
    upload_folder(fashion, s3_bucket, "cli", s3_server)
    env = {**os.environ, "S3_ENDPOINT_URL": s3_server}
    done = subprocess.run(
        [sys.executable, "-m", "longtail.cli", "ingest", f"s3://{s3_bucket}/cli", str(tmp_path), "--image-size", "8"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"fetched {len(list(fashion.iterdir()))} classes and ")
    assert (tmp_path / "train.h5").is_file() and (tmp_path / "ingest.json").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "longtail.cli", "ingest", "s3://no-such-bucket-x/p", str(tmp_path / "x")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and "NoSuchBucket" in done.stderr and s3_server in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x").exists()


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_lt_end_to_end_through_the_cli(tmp_path):
    """Issue 2's check: `longtail data fashion-mnist-lt F && longtail ingest F/train H --image-size 32`."""
    run = [sys.executable, "-m", "longtail.cli"]
    subprocess.run([*run, "data", "fashion-mnist-lt", str(tmp_path / "f")], check=True, capture_output=True, timeout=300)
    done = subprocess.run([*run, "ingest", str(tmp_path / "f" / "train"), str(tmp_path / "h"), "--image-size", "32"],
                          check=True, capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[0] == "fetched 10 classes and 14891 images in total"
    counts = json.loads((tmp_path / "f" / "dataset.json").read_text())["class_counts"]
    train, val = read_info(tmp_path / "h" / "train.h5"), read_info(tmp_path / "h" / "val.h5")
    summed = dict(zip(train.class_names, np.add(train.class_counts(), val.class_counts()).tolist(), strict=True))
    assert summed == counts and max(counts.values()) == 6000 and min(counts.values()) == 60
    assert train.mean_rgb is not None and len(train.class_names) == 10
    assert train.preprocessing == {"image_size": 32, "resize": "stretch", "clahe": False, "white_balance": False}


def test_an_s3_listing_skips_folder_markers_and_keeps_every_key_as_stored(s3_server, s3_bucket):
    """The listing (obstore) names the same objects as the server's own ListObjectsV2 (boto3), folder
    markers ("raw/cat/", empty) left out, whatever characters the keys hold."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    keys = ["raw/", "raw/cat/", "raw/cat/a.png", "raw/cat/sub/", "raw/cat/sub/b.png", "raw/dog/z w%+.png",
            "raw/dog/ü é.png", "raw/dog/*?=&.png", "raw/top.png", "rawx/outside.png", "raw/empty.png"]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"" if key.endswith("/") or "empty" in key else b"x")
    stored = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="raw/")["Contents"]]
    files = storage.list_files(f"s3://{s3_bucket}/raw", S3Settings(endpoint_url=s3_server))
    assert [f.relative for f in files] == sorted(k[4:] for k in stored if not k.endswith("/"))
    assert [f.uri for f in files][:2] == [f"s3://{s3_bucket}/raw/cat/a.png", f"s3://{s3_bucket}/raw/cat/sub/b.png"]
    assert "empty.png" in [f.relative for f in files]  # an empty file is listed (and rejected when read)
