"""The fork server ingest's decoding pool starts from, startable before anything heavy is imported.

Only the standard library here: `longtail ingest` starts the server as its first step, so the server
imports the decoders (longtail.decode_worker: numpy, OpenCV, Pillow; 0.12-0.14 s on the AMX machine) on
the second core while this process lists and plans the source, not after.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

# What the server imports once (preload), so a worker forks with the decoders loaded, and with the
# module of the loop it runs (decode_pool._pool_worker).
DECODERS_MODULE = "longtail.decode_worker"
WORKER_MODULE = "longtail.decode_pool"
# Below this many files the default is one process: a pool's start-up (a fork server importing the
# decoders, 0.14-0.23 s of CPU, then a worker) costs about what a second core saves on them. Measured on
# 2 cores, 256 px JPEGs to 64 px: 2,000 files 1.07 s with two processes, 1.04 s with one; 3,000
# files 1.21 s against 1.27 s; 4,000 files 1.44 s against 1.56 s.
POOL_MIN_FILES = 3000


def pool_context() -> Any:
    """The context ingest's pools start from: forkserver where there is one, else spawn.

    forkserver, not fork: a child forked from a parent that has run OpenCV's thread pool (CLAHE, big
    resizes) hangs in its first OpenCV call. Workers fork from a clean server process instead, which
    imports the decoders once (preload), so a pool starts in milliseconds once the server is up.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([DECODERS_MODULE, WORKER_MODULE])
    return ctx


def pool_likely(workers: int | None) -> bool:
    """Whether an ingest asked for `workers` may start a pool (before its files are counted)."""
    return (workers or os.cpu_count() or 1) > 1


def start(workers: int | None = None) -> None:
    """Start the fork server now, without waiting for it, if an ingest with `workers` may use it."""
    if pool_likely(workers) and pool_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()  # spawns the server and returns; the first fork waits for it
