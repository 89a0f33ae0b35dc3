"""Wall time of `longtail ingest` against the classic single-process loop, each a whole process, alternating.

Inputs (--inputs, default jpeg,scaled-lt):
- jpeg: --images (20,000) Fashion-MNIST training images upscaled to 256x256 3-channel JPEGs in 10
  class folders (made once under --jpeg-folder);
- scaled-lt: `longtail data scaled-lt --classes 209 --images 30000 --source-size 256` (80% JPEG,
  20% PNG, sides 0.7-1.3 x 256; made once under --scaled-folder), its train/ folder;
- s3: the jpeg input uploaded to a SeaweedFS server this script starts (scripts/s3-server.sh, on a
  free port, throwaway keys), and `longtail ingest s3://bench/jpeg OUT --workers 2` timed against
  `longtail ingest FOLDER OUT --workers 2` in the same rounds: straight to the server (loopback), and
  through a proxy that holds every request --latency-ms (2 and 10) first, as a server elsewhere in a
  cluster would (DelayProxy). Reported: each one's speed as a share of the folder's, peak RSS, the
  most GETs in flight at once (counted by the proxy; on loopback, the configured bound), and the CPU
  the server and the proxy took on the same cores (they share the machine with the ingest).
Each is ingested at --image-size (64) by these contenders, every one a separate process timed from
its start to its exit (interpreter start-up, imports, listing and pool start-up included):
- classic: one process, cv2.imread + INTER_AREA resize + BGR->RGB per file, rows buffered and
  written to HDF5 1,000 at a time (pyimagesearch's HDF5DatasetWriter pattern);
- longtail w1 / w2: `longtail ingest SRC OUT --image-size S --workers 1|2`;
- longtail w1 full: ingest with one worker, JPEGs decoded at full size (the reduced-scale DCT
  decode switched off): what the reduced decode is worth end to end;
- decode-only w1 reduced / w1 full / w2 reduced: read + decode + resize of every file in a pool of
  forkserver workers, results dropped. w2 reduced is the limit: ingest with nothing else to do.
After the rounds, the decode kernel alone (longtail's to_pixels on 500 files' bytes already in
memory, for --kernel-seconds) runs in 1 process and then in 2 at once: the most a second process
can add to the work that parallelises, with no start-up, listing, reads or results to pass on.
Rounds alternate the contenders (each round starts one later), so a change in the machine's load
touches all of them; the table gives each one's median and best time over the rounds, and ratios
of medians. A poller samples every process of a contender every 100 ms: its peak RSS (the largest of
one process; the contender's own process and its largest child) and CPU time (last sample, so it
slightly undercounts). The 1-minute load average is printed beside every time: the machine may be
shared, and a load above the core count makes every figure slower and noisier. So is the share of the
CPUs' time the hypervisor stole while the contender ran (/proc/stat's steal, on a VM): time the host
gave to other guests, which no load average inside this one shows and which hits a 2-process
contender harder than a 1-process one.

    python benchmarks/ingest.py [--inputs jpeg,scaled-lt,s3] [--rounds 3] [--max-minutes 20] [--cache warm|cold]

--cache: before each run the input is read into the page cache (warm, the default) or the page cache
is dropped (cold: root only; a first ingest, where the images come from the disk).

Targets: jpeg: w2 <= 0.4 x classic time; scaled-lt: w2 <= 0.5 x classic, peak RSS < 500 MB;
w2 >= 1.7 x w1 on both. s3: >= 0.7 x the folder's speed on loopback and >= 0.5 x with 10 ms per
request, peak RSS within 100 MB of the folder's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent
TARGETS = {"jpeg": 0.4, "scaled-lt": 0.5}  # w2 time / classic time
TARGET_W2_OVER_W1 = 1.7
POLL_S = 0.1  # a poller waking more often takes measurable CPU from the contenders with several processes
# Above this median steal (/proc/stat), the report says the 2-process figures are the host's, not the code's.
STEAL_WARN = 0.05


# ---- the child processes (each contender but longtail's CLI runs this file with --child) ----

def classic_loop(folder: Path, out: Path, size: int) -> int:
    """The classic pattern: one process, imread + resize, HDF5 writes in 1,000-row buffers."""
    import cv2
    import h5py
    import numpy as np

    from longtail.decode import is_image_name

    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name))
    classes = {name: i for i, name in enumerate(sorted({p.parent.name for p in paths}))}
    with h5py.File(out, "w") as f:
        images = f.create_dataset("images", (len(paths), size, size, 3), dtype=np.uint8)
        labels = f.create_dataset("labels", (len(paths),), dtype=np.int32)
        buf_x, buf_y, start = [], [], 0
        for p in paths:
            image = cv2.imread(str(p))
            image = cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            buf_x.append(image)
            buf_y.append(classes[p.parent.name])
            if len(buf_x) == 1000:
                images[start : start + 1000], labels[start : start + 1000] = buf_x, buf_y
                start, buf_x, buf_y = start + 1000, [], []
        if buf_x:
            images[start:], labels[start:] = buf_x, buf_y
    return len(paths)


def _full_size_jpeg_decode() -> None:
    """Switch off the reduced-scale JPEG decode in this process (workers=1 only: a pool's workers
    come from a fork server that never sees this)."""
    from longtail import decode

    decode._reduced_scale = lambda height, width, target: 1  # type: ignore[attr-defined]


_DECODE_SIZE = 0


def _init_decode(size: int, full: bool) -> None:
    global _DECODE_SIZE
    import cv2

    cv2.setNumThreads(1)
    _DECODE_SIZE = size
    if full:
        _full_size_jpeg_decode()


def _decode_file(path: str) -> int:
    from longtail.decode import DecodeError, PixelSettings, to_pixels

    with open(path, "rb") as f:
        data = f.read()
    try:
        return to_pixels(data, PixelSettings(image_size=_DECODE_SIZE)).size
    except DecodeError:
        return 0


def decode_only(folder: Path, size: int, workers: int, full: bool) -> int:
    """Read + decode + resize of every image in a pool of `workers` forkserver processes, nothing written."""
    import multiprocessing

    from longtail.decode import is_image_name

    paths = [str(p) for p in sorted(folder.rglob("*")) if p.is_file() and is_image_name(p.name)]
    ctx = multiprocessing.get_context("forkserver")  # as ingest: fork after OpenCV's threads ran can hang
    ctx.set_forkserver_preload(["longtail.decode"])
    with ctx.Pool(workers, initializer=_init_decode, initargs=(size, full)) as pool:
        for _ in pool.imap_unordered(_decode_file, paths, chunksize=64):
            pass
    return len(paths)


def run_child(argv: list[str]) -> None:
    kind, folder, out, size = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3])
    if kind == "classic":
        classic_loop(folder, out / "classic.h5", size)
    elif kind == "ingest-full":
        import contextlib
        import io

        from longtail.ingest import ingest

        _full_size_jpeg_decode()
        with contextlib.redirect_stdout(io.StringIO()):
            ingest(str(folder), out, image_size=size, workers=1)
    elif kind.startswith("decode-"):
        _, workers, scale = kind.split("-")  # decode-1-full, decode-2-reduced
        decode_only(folder, size, int(workers), scale == "full")
    else:
        raise SystemExit(f"unknown child {kind!r}")


def _kernel_worker(paths: list[str], size: int, seconds: float, ready: Any, start: Any, rates: Any) -> None:
    """Say `ready` once imported and read, then decode in-memory bytes for `seconds` after `start`;
    put images/s on `rates`."""
    import cv2

    from longtail.decode import PixelSettings, to_pixels

    cv2.setNumThreads(1)
    settings = PixelSettings(image_size=size)
    blobs = [Path(p).read_bytes() for p in paths]
    ready.put(True)
    start.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in blobs:
            to_pixels(b, settings)
        n += len(blobs)
    rates.put(n / (time.perf_counter() - t0))


def kernel_scaling(folder: Path, size: int, seconds: float = 4.0, files: int = 500) -> tuple[float, float]:
    """Images/s of the decode kernel alone (longtail's to_pixels on bytes already in memory: no
    start-up, listing, file reads or results to pass on) in 1 process, and in 2 at once.

    Their ratio is what a second process can add on this machine to the work that parallelises; a
    whole ingest also has its serial start (interpreter, imports, listing, plan) and end.
    """
    import multiprocessing

    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    paths = paths[:: max(1, len(paths) // files)][:files]
    ctx = multiprocessing.get_context("spawn")
    totals = []
    for procs in (1, 2):
        ready, start, rates = ctx.Queue(), ctx.Event(), ctx.Queue()
        workers = [ctx.Process(target=_kernel_worker, args=(paths, size, seconds, ready, start, rates))
                   for _ in range(procs)]
        for w in workers:
            w.start()
        for _ in workers:  # every one has imported and read its files before any starts the clock
            ready.get()
        start.set()
        totals.append(sum(rates.get() for _ in workers))
        for w in workers:
            w.join()
    return totals[0], totals[1]


# ---- the parent: inputs, contenders, rounds, table ----

CONTENDERS = {
    "classic": "classic loop (1 process)",
    "w1": "longtail ingest --workers 1",
    "w2": "longtail ingest --workers 2",
    "w1-full": "longtail ingest --workers 1, full-size JPEG decode",
    "decode-1-full": "decode+resize only, 1 process, full-size",
    "decode-1-reduced": "decode+resize only, 1 process, reduced",
    "decode-2-reduced": "decode+resize only, 2 processes (the limit)",
}


def command(name: str, folder: Path, out: Path, size: int) -> list[str]:
    if name in ("w1", "w2"):
        return [str(BIN / "longtail"), "ingest", str(folder), str(out), "--image-size", str(size),
                "--workers", name[1:]]
    child = "ingest-full" if name == "w1-full" else name
    return [sys.executable, __file__, "--child", child, str(folder), str(out), str(size)]


@dataclass
class Sample:
    seconds: float
    load: float
    steal: float | None  # share of the CPUs' time stolen by the hypervisor while it ran (None: not reported)
    cpu_s: float
    rss_main_mb: float
    rss_child_mb: float  # the largest other process of the contender (fork server, worker)


@dataclass
class Results:
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(s.seconds for s in self.samples[name])


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat (None where it has no steal field)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the CPUs' time stolen between two cpu_ticks() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Sample:
    """Run one contender, sampling its process tree; its exit must be 0."""
    load = os.getloadavg()[0]
    ticks = cpu_ticks()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak: dict[int, float] = {}
    cpu: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for p in tree:
                try:
                    with p.oneshot():
                        peak[p.pid] = max(peak.get(p.pid, 0.0), p.memory_info().rss / 2**20)
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            done.wait(POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    done.set()
    poller.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    others = [v for pid, v in peak.items() if pid != proc.pid]
    return Sample(seconds, load, steal_share(ticks, cpu_ticks()), sum(cpu.values()), peak.get(proc.pid, 0.0),
                  max(others, default=0.0))


def make_jpeg_folder(folder: Path, n: int) -> Path:
    """n Fashion-MNIST training images as 256x256 3-channel JPEGs (quality 90) in class folders, made once."""
    import cv2

    from longtail.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    marker = folder / f".complete-{n}"
    if not marker.exists():
        data = load_fashion_mnist()
        for i in range(n):
            label = int(data["train_labels"][i])
            big = cv2.resize(data["train_images"][i], (256, 256), interpolation=cv2.INTER_CUBIC)
            out = folder / FASHION_MNIST_CLASSES[label] / f"{i:05d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), cv2.cvtColor(big, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        marker.touch()
    return folder


def make_scaled_folder(folder: Path, classes: int, images: int) -> Path:
    """`longtail data scaled-lt` at --classes/--images, 256 px, made once; returns its train/ folder."""
    if not (folder / "train").is_dir():
        subprocess.run([str(BIN / "longtail"), "data", "scaled-lt", str(folder), "--classes", str(classes),
                        "--images", str(images), "--source-size", "256"], check=True, stdout=subprocess.DEVNULL)
    return folder / "train"


def describe(folder: Path) -> str:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    jpeg = sum(p.suffix.lower() in (".jpg", ".jpeg") for p in files)
    classes = len({p.parent for p in files})
    return f"{len(files)} files ({jpeg / max(1, len(files)):.0%} JPEG) in {classes} classes"


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def set_page_cache(folder: Path, cache: str) -> None:
    """Before each contender: its input all in the page cache (warm), or none of it (cold).

    warm reads every file, so no contender pays a disk read (a VM's host may take the page cache back
    within seconds: on the AMX machine on 2026-12-03, reading the 20k JPEGs took 0.76 s after 20 s idle
    and 0.25 s straight after an ingest). cold writes back dirty pages and drops the whole page cache
    (root only), as for a first ingest of images that were never read: the libraries' files go with it.
    """
    if cache == "cold":
        os.sync()
        DROP_CACHES.write_text("3\n")
        return
    for p in folder.rglob("*"):
        if p.is_file():
            p.read_bytes()


def bench(name: str, folder: Path, args: argparse.Namespace, deadline: float) -> Results:
    print(f"\n== {name}: {folder} - {describe(folder)} -> {args.image_size}x{args.image_size}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; page cache {args.cache} before each run",
          flush=True)
    contenders = [c for c in CONTENDERS if c in args.contenders]
    results = Results({c: [] for c in contenders})
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for r in range(args.rounds):
            if r and time.monotonic() > deadline:
                print(f"   (stopped after {r} rounds: --max-minutes reached)")
                break
            order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
            for c in order:
                out = Path(tmp) / c
                out.mkdir()
                set_page_cache(folder, args.cache)
                s = timed(command(c, folder, out, args.image_size))
                shutil.rmtree(out)
                results.samples[c].append(s)
                print(f"   round {r + 1}: {c:17s} {s.seconds:6.2f} s  cpu {s.cpu_s:5.1f} s  load {s.load:4.1f}  "
                      f"steal {percent(s.steal):>4s}  peak RSS {s.rss_main_mb:4.0f} MB (+ child {s.rss_child_mb:4.0f} MB)",
                      flush=True)
    return results


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def report(name: str, results: Results, n: int) -> None:
    have = [c for c, s in results.samples.items() if s]
    base = results.median("classic") if "classic" in have else None
    print(f"\n{name}: median / best of {len(results.samples[have[0]])} rounds, whole processes")
    print(f"   {'contender':47s} {'median':>7s} {'best':>7s} {'img/s':>7s} {'x classic':>9s} {'cpu s':>6s} "
          f"{'RSS MB':>7s} {'child':>6s} {'load':>9s} {'steal':>9s}")
    for c in have:
        s = results.samples[c]
        med = results.median(c)
        ratio = f"{base / med:9.2f}" if base else f"{'-':>9s}"
        loads = f"{min(x.load for x in s):.1f}-{max(x.load for x in s):.1f}"
        steals = [x.steal for x in s if x.steal is not None]
        stolen = f"{percent(min(steals))}-{percent(max(steals))}" if steals else "-"
        print(f"   {CONTENDERS[c]:47s} {med:7.2f} {min(x.seconds for x in s):7.2f} {n / med:7.0f} {ratio} "
              f"{statistics.median(x.cpu_s for x in s):6.1f} {max(x.rss_main_mb for x in s):7.0f} "
              f"{max(x.rss_child_mb for x in s):6.0f} {loads:>9s} {stolen:>9s}")

    def ratio(a: str, b: str) -> float | None:
        return results.median(b) / results.median(a) if a in have and b in have else None

    lines = [
        ("w2 vs classic (time ratio classic/w2)", ratio("w2", "classic"), 1 / TARGETS.get(name, 0.5)),
        ("w2 vs w1", ratio("w2", "w1"), TARGET_W2_OVER_W1),
        ("w1 reduced vs w1 full-size decode", ratio("w1", "w1-full"), None),
        ("decode only: reduced vs full-size, 1 process", ratio("decode-1-reduced", "decode-1-full"), None),
        ("w2 vs the limit (decode only, 2 processes)", ratio("w2", "decode-2-reduced"), None),
    ]
    for label, value, target in lines:
        if value is not None:
            goal = f"  (target >= {target:.1f}: {'met' if value >= target else 'NOT met'})" if target else ""
            print(f"   {label:47s} {value:5.2f}x{goal}")
    steals = [x.steal for c in have for x in results.samples[c] if x.steal is not None]
    if steals and statistics.median(steals) > STEAL_WARN:
        print(f"   NOTE: the hypervisor stole {percent(statistics.median(steals))} of the CPUs' time (median over "
              f"the runs, up to {percent(max(steals))}): the 2-process figures above are those of less than "
              "2 CPUs, and their ratios are not the code's")


# ---- the s3 input: a SeaweedFS server, a latency proxy, folder against s3:// ----

REPO = Path(__file__).resolve().parents[1]
S3_TARGETS = {"s3": 0.7, "s3-10ms": 0.5}  # speed as a share of the folder's
S3_RSS_MARGIN_MB = 100
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SeaweedFS:
    """A SeaweedFS S3 server started by scripts/s3-server.sh in a folder of its own, on a free port."""

    state: Path
    port: int = field(default_factory=free_port)  # the script also takes the 14 ports above it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials(self) -> dict[str, str]:
        """Its throwaway keys as environment variables (never printed)."""
        words = (self.state / "s3.env").read_text().split()
        return dict(w.split("=", 1) for w in words if "=" in w)

    def processes(self) -> list[psutil.Process]:
        pgid = int((self.state / "weed.pid").read_text())
        return [p for p in psutil.process_iter() if _pgid(p.pid) == pgid]

    def script(self, action: str) -> None:
        env = {**os.environ, "WEED": str(BIN / "weed")}
        subprocess.run([str(REPO / "scripts" / "s3-server.sh"), action, str(self.state), str(self.port)],
                       check=True, timeout=180, env=env, stdout=subprocess.DEVNULL)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


@contextmanager
def seaweedfs_with(folder: Path) -> Iterator[SeaweedFS]:
    """A started SeaweedFS holding `folder` under s3://bench/jpeg/; stopped (SIGKILL) on the way out."""
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        for tries_left in (2, 1, 0):  # a port above the free one may be taken meanwhile: another port
            server = SeaweedFS(Path(tmp) / str(tries_left))
            try:
                server.script("up")
                break
            except subprocess.CalledProcessError:
                log = (server.state / "weed.log").read_text(errors="replace").splitlines()
                print("   SeaweedFS did not start; its log ends:\n      " + "\n      ".join(log[-5:]), flush=True)
                if not tries_left:
                    raise
        try:
            upload(folder, server)
            yield server
        finally:
            for p in server.processes():
                try:
                    p.kill()
                except psutil.Error:
                    pass


def upload(folder: Path, server: SeaweedFS, threads: int = 16) -> None:
    """Every file of `folder` to s3://bench/jpeg/<relative path>, 16 PUTs at a time."""
    import boto3
    from botocore.config import Config

    from longtail.storage import map_concurrently

    keys = server.credentials()
    client = boto3.session.Session(aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"]).client(
        "s3", endpoint_url=server.url, region_name="us-east-1", config=Config(max_pool_connections=threads))
    client.create_bucket(Bucket=BUCKET)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    started = time.perf_counter()
    map_concurrently(lambda p: client.put_object(Bucket=BUCKET, Key=f"jpeg/{p.relative_to(folder).as_posix()}",
                                                 Body=p.read_bytes()), files, threads)
    print(f"   uploaded {len(files)} files to s3://{BUCKET}/jpeg in {time.perf_counter() - started:.1f} s", flush=True)


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds each HTTP request `delay_s` before passing it on to the
    server: the round trip to a server elsewhere in a cluster, added on loopback. It counts the
    requests in flight (sent and not yet answered) and keeps their peak.

    It runs its own event loop on a daemon thread of this process, serves only the connections the
    ingest opens (its pool: at most workers x max_concurrency), and stops with stop() or the process.
    """

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port, self.delay_s = target_port, delay_s
        self.in_flight = self.peak = 0
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="delay-proxy")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_peak(self) -> None:
        self.peak = self.in_flight

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        answered = True  # the next bytes from the client start a request (HTTP/1.1: one at a time)

        async def requests() -> None:
            nonlocal answered
            while data := await client_r.read(2**16):
                if answered:
                    answered = False
                    self.in_flight += 1
                    self.peak = max(self.peak, self.in_flight)
                    await asyncio.sleep(self.delay_s)
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def responses() -> None:
            nonlocal answered
            while data := await server_r.read(2**16):
                if not answered:
                    answered = True
                    self.in_flight -= 1
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        await asyncio.gather(requests(), responses(), return_exceptions=True)
        if not answered:
            self.in_flight -= 1

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


S3_CONTENDERS = {
    "folder": "longtail ingest FOLDER --workers 2",
    "s3": "longtail ingest s3:// --workers 2, loopback",
}


def bench_s3(folder: Path, args: argparse.Namespace, deadline: float) -> tuple[Results, dict[str, list[int]],
                                                                               dict[str, list[float]]]:
    """Rounds of folder against s3:// (loopback, then each --latency-ms through a DelayProxy), alternating.

    Returns the samples, the most GETs in flight per s3 run (the proxy's count; loopback: the bound),
    and the CPU seconds the server and the proxy took per run.
    """
    from longtail.storage import S3Settings

    n = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    print(f"\n== s3: {folder} - {describe(folder)} -> {args.image_size}x{args.image_size}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    latencies = [int(x) for x in args.latency_ms.split(",") if x]
    contenders = dict(S3_CONTENDERS)
    for ms in latencies:
        contenders[f"s3-{ms}ms"] = f"longtail ingest s3:// --workers 2, +{ms} ms/request"
    CONTENDERS.update(contenders)
    results = Results({c: [] for c in contenders})
    gets: dict[str, list[int]] = {c: [] for c in contenders}
    server_cpu: dict[str, list[float]] = {c: [] for c in contenders}
    bound = 2 * S3Settings().max_concurrency
    with seaweedfs_with(folder) as server, tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        proxies = {f"s3-{ms}ms": DelayProxy(server.port, ms / 1000) for ms in latencies}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and "ENDPOINT_URL" not in k}
        env.update(server.credentials())
        weed = server.processes()
        me = [psutil.Process()]  # the proxies' threads run here
        try:
            for r in range(args.rounds):
                if r and time.monotonic() > deadline:
                    print(f"   (stopped after {r} rounds: --max-minutes reached)")
                    break
                names = list(contenders)
                for c in names[r % len(names):] + names[: r % len(names)]:
                    out = Path(tmp) / c
                    out.mkdir()
                    source = str(folder) if c == "folder" else f"s3://{BUCKET}/jpeg"
                    endpoint = proxies[c].url if c in proxies else server.url
                    if c in proxies:
                        proxies[c].reset_peak()
                    before = cpu_seconds(weed) + cpu_seconds(me)
                    cmd = [str(BIN / "longtail"), "ingest", source, str(out), "--image-size", str(args.image_size),
                           "--workers", "2"]
                    s = timed(cmd, {**env, "S3_ENDPOINT_URL": endpoint})
                    server_cpu[c].append(cpu_seconds(weed) + cpu_seconds(me) - before)
                    gets[c].append(proxies[c].peak if c in proxies else bound if c == "s3" else 0)
                    shutil.rmtree(out)
                    results.samples[c].append(s)
                    print(f"   round {r + 1}: {c:8s} {s.seconds:6.2f} s  {n / s.seconds:6.0f} img/s  cpu {s.cpu_s:5.1f} s  "
                          f"server+proxy cpu {server_cpu[c][-1]:5.1f} s  load {s.load:4.1f}  peak RSS "
                          f"{s.rss_main_mb:4.0f} MB (+ child {s.rss_child_mb:4.0f} MB)  GETs in flight {gets[c][-1]}",
                          flush=True)
        finally:
            for proxy in proxies.values():
                proxy.stop()
    return results, gets, server_cpu


def report_s3(results: Results, gets: dict[str, list[int]], server_cpu: dict[str, list[float]], n: int) -> None:
    have = [c for c, s in results.samples.items() if s]
    base = results.median("folder")
    base_rss = max(x.rss_main_mb + x.rss_child_mb for x in results.samples["folder"])
    print(f"\ns3: median / best of {len(results.samples['folder'])} rounds, whole processes")
    print(f"   {'contender':47s} {'median':>7s} {'best':>7s} {'img/s':>7s} {'x folder':>8s} {'cpu s':>6s} "
          f"{'server s':>8s} {'RSS MB':>7s} {'child':>6s} {'GETs':>5s} {'load':>9s}")
    for c in have:
        s = results.samples[c]
        med = results.median(c)
        loads = f"{min(x.load for x in s):.1f}-{max(x.load for x in s):.1f}"
        print(f"   {CONTENDERS[c]:47s} {med:7.2f} {min(x.seconds for x in s):7.2f} {n / med:7.0f} {base / med:8.2f} "
              f"{statistics.median(x.cpu_s for x in s):6.1f} {statistics.median(server_cpu[c]):8.1f} "
              f"{max(x.rss_main_mb for x in s):7.0f} {max(x.rss_child_mb for x in s):6.0f} "
              f"{max(gets[c]) if c != 'folder' else '-':>5} {loads:>9s}")
    for c in have:
        if c == "folder":
            continue
        ratio = base / results.median(c)
        rss = max(x.rss_main_mb + x.rss_child_mb for x in results.samples[c]) - base_rss
        target = S3_TARGETS.get(c)
        goal = f" (target >= {target:.1f}: {'met' if ratio >= target else 'NOT met'})" if target else ""
        print(f"   {c:8s} speed {ratio:4.2f}x the folder's{goal}; peak RSS {rss:+.0f} MB against the folder's "
              f"(target within {S3_RSS_MARGIN_MB}: {'met' if abs(rss) <= S3_RSS_MARGIN_MB else 'NOT met'})")
    print("   server s: CPU seconds the SeaweedFS server (and the latency proxy, in this process) took during the run, "
          "on the same cores as the ingest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default="jpeg,scaled-lt", help="comma-separated: jpeg, scaled-lt, s3")
    parser.add_argument("--latency-ms", default="2,10",
                        help="s3: the per-request delays (ms, comma-separated) added by a proxy, beside loopback")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated of {', '.join(CONTENDERS)}")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=20000, help="JPEGs in the jpeg input")
    parser.add_argument("--jpeg-folder", type=Path, default=Path(".longtail/bench/fashion-jpeg-256"))
    parser.add_argument("--scaled-folder", type=Path, default=Path(".longtail/bench/scaled-lt-30k"))
    parser.add_argument("--scaled-images", type=int, default=30000)
    parser.add_argument("--scaled-classes", type=int, default=209)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=30.0,
                        help="start no new round after this long (each input finishes the round it is in)")
    parser.add_argument("--kernel-seconds", type=float, default=4.0,
                        help="seconds of the decode-kernel scaling check per input (0 skips it)")
    parser.add_argument("--cache", choices=("warm", "cold"), default="warm",
                        help="before each run, read the input into the page cache (warm), or drop the page "
                        "cache (cold: root only, the first ingest of images never read)")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "FOLDER", "OUT", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return
    args.contenders = set(args.contenders.split(","))
    if args.cache == "cold" and not os.access(DROP_CACHES, os.W_OK):
        raise SystemExit(f"--cache cold drops the page cache through {DROP_CACHES}, which this user cannot "
                         "write (run as root, or use --cache warm)")
    deadline = time.monotonic() + 60 * args.max_minutes
    for name in args.inputs.split(","):
        if name == "s3":
            folder = make_jpeg_folder(args.jpeg_folder, args.images)
            n = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
            report_s3(*bench_s3(folder, args, deadline), n)
            continue
        if name == "jpeg":
            folder = make_jpeg_folder(args.jpeg_folder, args.images)
        elif name == "scaled-lt":
            folder = make_scaled_folder(args.scaled_folder, args.scaled_classes, args.scaled_images)
        else:
            raise SystemExit(f"--inputs: unknown input {name!r} (jpeg, scaled-lt, s3)")
        n = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        report(name, bench(name, folder, args, deadline), n)
        if args.kernel_seconds > 0:
            one, two = kernel_scaling(folder, args.image_size, args.kernel_seconds)
            print(f"   {'decode kernel alone, bytes in memory: 1 / 2 processes':47s} {one:5.0f} / {two:5.0f} img/s: "
                  f"{two / one:.2f}x (what a second process adds to the parallel part here)", flush=True)


if __name__ == "__main__":
    main()
