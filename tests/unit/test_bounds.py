"""Safety rule "Bounds": every read is bounded before it happens (docs/safety.md "Bounds").

Types and sizes of files, rejected-file reports, repeated warnings, decode memory, network deadlines.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_ingest_hostile import make_classes

from longtail.cli import main
from longtail.errors import LongtailError, StorageError
from longtail.ingest import ingest

# --- Reports and warnings: counted, and named only up to LISTED_MAX -------------------------------

def test_a_manifest_of_missing_files_gives_a_bounded_report_with_the_right_reason(tmp_path, capsys):
    from longtail.sources import LISTED_MAX

    source = make_classes(tmp_path / "src")
    rows = [f"{c}/{i}.png,{c}\n" for c in "ab" for i in range(6)]
    rows += [f"c{i % 7}/missing_{i:06d}.png,c{i % 7}\n" for i in range(20_000)]
    (source / "m.csv").write_text("path,label\n" + "".join(rows))
    assert main(["ingest", str(source / "m.csv"), str(tmp_path / "out")]) == 0
    report_file = tmp_path / "out" / "ingest.json"
    result = json.loads(report_file.read_text())
    assert result["n_images"] == 12
    assert result["rejected_total"] == 20_000
    assert result["rejected_counts"] == {"listed in the manifest but not found": 20_000}
    assert len(result["rejected"]) == LISTED_MAX
    assert all(r["reason"] == "listed in the manifest but not found" for r in result["rejected"])
    assert report_file.stat().st_size < 64 * 1024
    out = capsys.readouterr().out
    assert "rejected 20000 files: 20000 listed in the manifest but not found" in out
    assert "could not be decoded" not in out


def test_a_manifest_repeating_a_few_files_warns_in_a_bounded_number_of_lines(tmp_path, caplog):
    from longtail.sources import LISTED_MAX

    source = make_classes(tmp_path / "src", per_class=20)
    rows = [f"{c}/{i % 20}.png,{c}\n" for i in range(10_000) for c in "ab"]
    (source / "m.csv").write_text("path,label\n" + "".join(rows))
    with caplog.at_level(logging.WARNING, logger="longtail.sources"):
        result = ingest(str(source / "m.csv"), tmp_path / "out", workers=1)
    assert result["n_images"] == 40 and result["duplicate_rows"] == 20_000 - 40
    lines = [r for r in caplog.records if "repeat" in r.getMessage()]
    assert len(lines) == LISTED_MAX + 1
    assert f"and {20_000 - 40 - LISTED_MAX} more repeated manifest rows" in lines[-1].getMessage()


def test_a_manifest_with_a_huge_field_or_a_nul_byte_is_a_one_line_error(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    (source / "big.csv").write_text("path,label\n" + "a/" + "x" * 200_000 + ".png,a\n")
    (source / "nul.csv").write_text("path,label\na/0.png,a\nb/0\x00.png,b\n")
    for name, message in (("big.csv", "field larger than field limit"), ("nul.csv", "NUL")):
        assert main(["ingest", str(source / name), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_a_submission_with_a_huge_field_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "sub.csv").write_text("id,label\n1,a\n2," + "b" * 200_000 + "\n")
    (tmp_path / "labels.csv").write_text("id,label\n1,a\n2,b\n")
    assert main(["score", str(tmp_path / "sub.csv"), str(tmp_path / "labels.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a valid CSV" in err


# --- Regular files only, sizes checked before reading ----------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_an_image_is_rejected_unread_and_leaves_nothing(tmp_path):
    source = make_classes(tmp_path / "src")
    os.mkfifo(source / "a" / "x.png")
    out = tmp_path / "out"
    # A reader that opened the FIFO would wait forever for a writer: run it where a hang is a failure.
    script = f"from longtail.ingest import ingest; ingest({str(source)!r}, {str(out)!r}, workers=1)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "ingest.json").read_text())
    assert result["rejected"] == [{"path": "a/x.png", "reason": "not a regular file (a FIFO, socket or device): not read"}]
    assert result["n_images"] == 12
    assert sorted(p.name for p in out.iterdir()) == [".longtail-written.json", "ingest.json", "train.h5", "val.h5"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_manifest_or_in_a_manifest_is_refused_unread(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    os.mkfifo(source / "m.csv")
    script = f"from longtail.cli import main; raise SystemExit(main(['ingest', {str(source / 'm.csv')!r}, 'out']))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "not a regular file" in done.stderr, done.stderr[-2000:]
    os.mkfifo(source / "a" / "f.png")
    (source / "ok.csv").write_text("path,label\n" + "".join(f"{c}/{i}.png,{c}\n" for c in "ab" for i in range(6))
                                   + "a/f.png,a\n")
    script = f"from longtail.ingest import ingest; ingest({str(source / 'ok.csv')!r}, 'out', workers=1)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "ingest.json").read_text())
    assert result["rejected"] == [{"path": "a/f.png", "reason": "not a regular file (a FIFO, socket or device): not read"}]


def test_a_file_over_the_size_bound_is_rejected_before_it_is_read(tmp_path):
    from longtail import storage
    from longtail.decode import MAX_FILE_BYTES

    source = make_classes(tmp_path / "src")
    with open(source / "a" / "huge.png", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 2**20)  # sparse: no disk, and no memory unless read
    result = ingest(str(source), tmp_path / "out", workers=1)
    assert result["rejected"] == [{"path": "a/huge.png", "reason": "file of 129 MiB, over the 128 MiB limit: not read"}]
    with pytest.raises(storage.ReadRefused, match="over the 1 MiB limit"):
        storage.read_bytes(str(source / "a" / "huge.png"), max_bytes=2**20)


# --- Decode memory: peak under 2 x the per-image bound, measured -----------------------------------

def png_16bit_rgba(width: int, height: int) -> bytes:
    """A valid 16-bit RGBA PNG, half transparent (the compositing path), compressed row by row."""
    row = b"\x00" + struct.pack(">HHHH", 40000, 20000, 10000, 32768) * width
    compressor = zlib.compressobj(1)
    rows_per_block = max(1, (8 << 20) // len(row))
    block = row * rows_per_block
    parts = [compressor.compress(block) for _ in range(height // rows_per_block)]
    parts += [compressor.compress(row * (height % rows_per_block)), compressor.flush()]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB")
def test_a_16_bit_rgba_png_at_the_limits_decodes_within_twice_the_per_image_bound(tmp_path):
    from longtail.decode import MAX_DECODE_BYTES, MAX_IMAGE_PIXELS

    side = 5760  # 33 MP x 8 bytes = 253 MiB: inside both limits
    assert side * side <= MAX_IMAGE_PIXELS and side * side * 8 <= MAX_DECODE_BYTES
    path = tmp_path / "big.png"
    path.write_bytes(png_16bit_rgba(side, side))
    script = (
        "import resource, cv2, numpy as np\n"
        "from longtail.decode import PixelSettings, to_pixels\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "to_pixels(cv2.imencode('.png', np.zeros((64, 64, 4), np.uint16))[1].tobytes(), PixelSettings())  # warm up\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out = to_pixels(data, PixelSettings(image_size=32))\n"
        "assert out.shape == (32, 32, 3) and int(out[0, 0, 0]) == 205, out[0, 0]\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grew = int(done.stdout.split()[-1])
    print(f"decode peak: {grew / 2**20:.0f} MiB over the interpreter, bound {MAX_DECODE_BYTES / 2**20:.0f} MiB")
    assert grew <= 2 * MAX_DECODE_BYTES


def test_a_png_exif_orientation_is_applied():
    from longtail.decode import decode

    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :10] = 255  # the left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", exif=exif)
    upright = decode(buf.getvalue())
    assert upright.shape == (20, 10, 3)
    assert (upright[:10] == 255).all() and (upright[10:] == 0).all()  # the white half on top


# --- Network: one deadline of at most 60 s per call, whatever the retries -------------------------

def silent_server() -> tuple[socket.socket, list[socket.socket]]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, held


def test_an_s3_endpoint_that_never_answers_is_given_up_within_the_deadline(monkeypatch):
    from longtail.storage import NETWORK_DEADLINE_S, S3Settings, list_files, read_bytes, s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    defaults = S3Settings()
    assert NETWORK_DEADLINE_S <= 60 and defaults.deadline_s <= 60 and defaults.attempt_worst_s <= defaults.deadline_s
    with pytest.raises(StorageError, match="deadline"):
        S3Settings(read_timeout=60.0, max_attempts=5)  # the 301 s: refused as settings
    server, held = silent_server()
    try:
        settings = S3Settings(endpoint_url=f"http://127.0.0.1:{server.getsockname()[1]}", connect_timeout=0.5,
                              read_timeout=1.0, max_attempts=2, deadline_s=4.0)
        s3_client(settings)
        for n, call in enumerate((lambda: read_bytes("s3://bucket/key.png", settings),
                                  lambda: list_files("s3://bucket/p", settings)), start=1):
            # One attempt, i.e. one connection per client try (max_attempts in all, as attempt_worst_s
            # counts them), each ended by its timeout, never by the clock: boto3 (the read) does not retry
            # a read timeout; obstore (the listing) retries it, and no second attempt fits the deadline.
            with pytest.raises(StorageError, match="cannot (read|list) s3:.*([Rr]ead timeout|unreachable after 1 attempts)"):
                call()
            assert len(held) == n * settings.max_attempts, held
    finally:
        server.close()
        for s in held:
            s.close()


def test_mlflow_http_calls_fit_the_deadline():
    from longtail.storage import NETWORK_DEADLINE_S
    from longtail.tracking.env import CLIENT_LIMITS

    tries = int(CLIENT_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) + 1
    backoff = sum(float(CLIENT_LIMITS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]) * 2**i for i in range(tries - 1))
    assert tries * float(CLIENT_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"]) + backoff + tries <= NETWORK_DEADLINE_S


# --- Tracking store paths: checked before MLflow retries them or makes folders ---------------------

def sql_engines_opened(monkeypatch) -> list[str]:
    """Every SQLAlchemy engine MLflow opens from now on (its SQL store, which it retries for minutes)."""
    import sqlalchemy

    opened: list[str] = []
    real = sqlalchemy.create_engine
    monkeypatch.setattr(sqlalchemy, "create_engine", lambda url, *a, **k: opened.append(str(url)) or real(url, *a, **k))
    return opened


@pytest.mark.parametrize(("uri", "message"), [
    ("sqlite:////proc/longtail-test/mlflow.db", "does not exist"),
    ("sqlite:////proc/mlflow.db", "cannot create a file in /proc"),
    ("sqlite:////nonexistent-longtail/dir/m.db", "folder /nonexistent-longtail/dir does not exist"),
])
def test_a_sqlite_store_that_cannot_work_is_refused_at_once(uri, message, monkeypatch):
    from longtail.tracking.store import check_tracking_reachable

    engines = sql_engines_opened(monkeypatch)
    with pytest.raises(LongtailError, match=message):
        check_tracking_reachable(uri)
    assert engines == []
    assert not Path("/nonexistent-longtail").exists()


@pytest.mark.parametrize("command", [["report", "x"], ["promote", "m", "1"], ["lb", "0123abcd", "0.5"]])
def test_every_command_refuses_a_sqlite_store_that_cannot_work_in_one_line(command, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/mlflow.db")
    engines = sql_engines_opened(monkeypatch)
    assert main(command) == 2  # was 106 s of MLflow retrying its SQL store, then a traceback
    assert engines == [], "refused before MLflow opens (and retries) the store"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot create a file in /proc" in err


def test_a_sqlite_store_naming_another_file_is_refused(tmp_path):
    from longtail.tracking.store import check_tracking_reachable

    (tmp_path / "runs.csv").write_text("id,label\n1,a\n")
    with pytest.raises(LongtailError, match="is not a SQLite database"):
        check_tracking_reachable(f"sqlite:///{tmp_path / 'runs.csv'}")
    with pytest.raises(LongtailError, match="is a folder"):
        check_tracking_reachable(f"sqlite:///{tmp_path}")
    check_tracking_reachable(f"sqlite:///{tmp_path / 'new.db'}")  # a new file in a folder that takes one
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]


def test_a_relative_sqlite_path_becomes_absolute(tmp_path, monkeypatch):
    from longtail.tracking.store import ensure_experiment, resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri("sqlite:///rel.db")
    assert uri == f"sqlite:///{tmp_path / 'rel.db'}"
    assert ensure_experiment("bounds", "sqlite:///rel.db")  # no traceback from a relative path
    assert (tmp_path / "rel.db").is_file()


def test_lb_against_a_failing_server_says_so_not_run_not_found(capsys):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    requests: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            requests.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["lb", "0123abcd", "0.5", "--tracking-uri", uri]) == 2
        assert requests == ["GET /health"], "one probe, not the MLflow client's retries"
    finally:
        server.shutdown()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "answered HTTP 500" in err and "not found" not in err


def test_a_download_that_trickles_or_never_ends_is_given_up(tmp_path, monkeypatch):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from longtail import datasets
    from longtail.datasets import _fetch

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 1024)
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/x.gz"
    try:
        # _fetch's own clock, one second per reading: the deadline is checked after every piece that
        # arrives, so a 2 s deadline stops the download at the third piece, however slow the box.
        ticks = iter(range(100))
        readings: list[int] = []
        monkeypatch.setattr(datasets, "time", type("Clock", (), {"monotonic": lambda: readings.append(next(ticks))
                                                                or readings[-1]}))
        with pytest.raises(OSError, match="not complete after 2 s"):
            _fetch(url, deadline_s=2.0)
        assert readings == [0, 1, 2, 3]
        monkeypatch.undo()
        with pytest.raises(OSError, match="more than 0 MiB"):
            _fetch(url, max_bytes=4096)
    finally:
        server.shutdown()
