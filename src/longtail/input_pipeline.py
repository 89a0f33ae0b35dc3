"""HDF5 split -> tf.data: reshuffled every epoch over the whole file, scaled in float32, augmented on the fly.

Rows are read in groups through one `tf.numpy_function` per group, never one row at a time:
- in memory (the split fits `train.memory_budget_mb`): a group is one batch of a fresh permutation
  of all rows, gathered from a numpy array;
- streamed: a group is a few HDF5 chunks picked in a fresh random order over the whole file, read
  as contiguous slices and shuffled together, then re-cut into batches. A class-sorted file still
  gives mixed batches, because the chunks of a group come from anywhere in the file. The group size,
  the parallel reads and maps and the prefetch depth are fixed numbers drawn from
  `train.memory_budget_mb` (`stream_plan`), so what the pipeline buffers stays within the budget.

The order is a pure function of (seed, epoch), not of iterator state, so a training resumed at
epoch k sees exactly the batches an uninterrupted one would (see `EpochPlan`). Augmentation
(`augmentation.py`) uses stateless random ops seeded the same way. Scaling (Preprocessing.to_float)
happens in float32 after the uint8 colour operations of ingest, so mean subtraction cannot wrap around.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tensorflow as tf

from longtail.augmentation import Augmentation, Mixing, augment, mix_if_on
from longtail.config import TrainConfig
from longtail.errors import DataError
from longtail.preprocessing import Preprocessing
from longtail.splits import CHUNK_ROWS, IMAGES, LABELS, SplitInfo, read_info

log = logging.getLogger(__name__)

# Most chunks shuffled together when streaming: 32 x 64 rows = 2048 rows per group.
DEFAULT_STREAM_CHUNKS = 32
# Fewest chunks per group when the budget is small: a batch still draws on rows from 4 places in the file.
MIN_GROUP_CHUNKS = 4
# Arrays alive per streamed stage, counted by stream_plan: a group read as numpy and held as a tensor;
# while one batch is scaled, the cast and the scaled float32 copies; while it is also augmented, the
# float32 batches the augmentation holds (augmentation.Augmentation.float_copies).
READ_COPIES = 2
FLOAT_COPIES = 2
# What the streamed pipeline costs before it holds any rows: tf.data's threads and function graphs, the
# open file and the labels (~10 MB of RSS over a process with the same imports, at 8 px).
RUNTIME_BYTES = 12 * 2**20
# Deepest prefetch and most parallel reads when streaming; reads share one file lock, so more would wait.
MAX_PREFETCH = 2
MAX_READS = 2
# Rows per read when in memory (a whole number of batches).
GROUP_ROWS = 2048


class EpochPlan:
    """Which rows form each group, as a function of (seed, epoch).

    `epoch` is set by the callback from `callback()` at each epoch start (the absolute epoch,
    also after a resume); used without it, each pass over the dataset advances it by one.
    """

    def __init__(self, n: int, group_rows: int, *, shuffle: bool, streamed: bool, seed: int,
                 drop_remainder: bool, chunk_rows: int = CHUNK_ROWS, batch_size: int | None = None) -> None:
        self.n = n
        self.chunk_rows = chunk_rows
        self.batch_size = batch_size or group_rows
        self.group_rows = group_rows
        self.shuffle = shuffle
        self.streamed = streamed
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.epoch = 0
        self._explicit = False

    def rows(self) -> tuple[np.ndarray, np.int64]:
        """This epoch's row order, (n_groups, group_rows) padded with -1, and the epoch index."""
        epoch = self.epoch
        if not self._explicit:
            self.epoch += 1
        self._explicit = False
        rng = np.random.default_rng([self.seed, epoch])
        if not self.shuffle:
            order = np.arange(self.n)
        elif not self.streamed:
            order = rng.permutation(self.n)
        else:
            # Whole chunks in random order (contiguous reads); rows are shuffled within each group.
            n_chunks = -(-self.n // self.chunk_rows)
            chunks = rng.permutation(n_chunks)
            order = np.concatenate([np.arange(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.n))
                                    for c in chunks])
        if self.drop_remainder and not self.streamed:
            order = order[: max(self.batch_size, len(order) // self.batch_size * self.batch_size)]
        n_groups = -(-len(order) // self.group_rows)
        padded = np.full(n_groups * self.group_rows, -1, dtype=np.int64)
        padded[: len(order)] = order
        groups = padded.reshape(n_groups, self.group_rows)
        if self.shuffle and self.streamed:
            for g in groups:
                valid = g[g >= 0]
                g[: len(valid)] = rng.permutation(valid)
        return groups, np.int64(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Pin the next pass to `epoch` (Keras' absolute epoch index)."""
        self.epoch = int(epoch)
        self._explicit = True

    def callback(self) -> Any:
        """A Keras callback that pins each epoch's order to the epoch index."""
        import keras

        plan = self

        class _PinEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                plan.set_epoch(epoch)

        return _PinEpoch()


@dataclass(frozen=True)
class StreamPlan:
    """Fixed sizes of the streamed pipeline, and the bytes it holds at most with them."""

    group_chunks: int
    reads: int
    maps: int
    prefetch: int
    peak_bytes: int


def stream_peak_bytes(group_rows: int, reads: int, maps: int, prefetch: int, row_bytes: int,
                      batch_size: int, float_copies: int = FLOAT_COPIES) -> int:
    """Bytes the streamed pipeline holds at most: its runtime, uint8 groups, float32 batches.

    RUNTIME_BYTES, then: reads in flight or waiting hold a group each (READ_COPIES arrays), rebatch
    cuts one group and builds one uint8 batch, each parallel map holds its uint8 batch and
    `float_copies` float32 arrays, and the prefetch buffer and the model each hold one float32 batch.
    """
    group, batch = group_rows * row_bytes, batch_size * row_bytes
    return (RUNTIME_BYTES + reads * READ_COPIES * group + group + batch
            + maps * (batch + float_copies * 4 * batch) + (prefetch + 1) * 4 * batch)


def stream_plan(budget_bytes: float, row_bytes: int, batch_size: int, chunk_rows: int, *,
                float_copies: int = FLOAT_COPIES, max_group_chunks: int = DEFAULT_STREAM_CHUNKS,
                max_maps: int = 2) -> StreamPlan:
    """The streamed pipeline's group size, parallelism and prefetch depth for a memory budget.

    Starts from the floor (groups of MIN_GROUP_CHUNKS chunks, or enough chunks for one batch, one
    read, one map, a prefetch of one) and grows one knob at a time, in turn, while
    `stream_peak_bytes` stays within the budget: parallel maps (up to `max_maps`), prefetch depth
    (up to MAX_PREFETCH), parallel reads (up to MAX_READS), then the group size, doubled up to
    `max_group_chunks`. The floor is kept even when it exceeds a tiny budget (0 included): the
    pipeline still runs, with the least it can hold, and `peak_bytes` says by how much it is over.

    Args:
        budget_bytes: what the pipeline may hold (train.memory_budget_mb in bytes).
        row_bytes: one stored image (uint8).
        batch_size: rows per batch.
        chunk_rows: rows per HDF5 chunk.
        float_copies: float32 batches alive per map call (AUGMENT_FLOAT_COPIES when augmenting).
        max_group_chunks: the most chunks shuffled together per group (also caps the floor).
        max_maps: the most batches scaled and augmented at once (the CPU cores).
    """
    floor_chunks = max(MIN_GROUP_CHUNKS, -(-batch_size // chunk_rows))
    knobs = {"group_chunks": max(1, min(max_group_chunks, floor_chunks)), "reads": 1, "maps": 1, "prefetch": 1}
    caps = {"maps": max(1, max_maps), "prefetch": MAX_PREFETCH, "reads": MAX_READS,
            "group_chunks": max(knobs["group_chunks"], max_group_chunks)}

    def peak(k: dict[str, int]) -> int:
        return stream_peak_bytes(k["group_chunks"] * chunk_rows, k["reads"], k["maps"], k["prefetch"],
                                 row_bytes, batch_size, float_copies)

    grown = True
    while grown:
        grown = False
        for name in ("maps", "prefetch", "reads", "group_chunks"):
            step = min(caps[name], knobs[name] * 2 if name == "group_chunks" else knobs[name] + 1)
            if step > knobs[name] and peak({**knobs, name: step}) <= budget_bytes:
                knobs[name] = step
                grown = True
    return StreamPlan(**knobs, peak_bytes=peak(knobs))


class RowReader:
    """Reads groups of rows from memory or from the HDF5 file (one open handle per process).

    Labels are small and always held in memory. Streamed images are read chunk by chunk; an
    unfiltered chunk is read raw (`read_direct_chunk`, ~20 us) instead of through a hyperslab
    selection (~300 us per h5py call). tf.data calls it from several threads at once: file access
    is serialised by a lock (concurrent reads on one HDF5 handle crash), the rest runs in parallel.
    """

    def __init__(self, path: Path, in_memory: bool, labelled: bool) -> None:
        self.path = path
        self.in_memory = in_memory
        self._file: h5py.File | None = None
        self._dataset: h5py.Dataset | None = None
        self._images: np.ndarray | None = None
        self._lock = threading.Lock()
        self._thread = threading.local()  # each reading thread's chunk buffer
        with h5py.File(path, "r") as f:
            images = f[IMAGES]
            self.n = images.shape[0]
            self.row_shape = images.shape[1:]
            self.chunk_rows = images.chunks[0] if images.chunks else CHUNK_ROWS
            self._raw_chunks = bool(images.chunks) and images.chunks[1:] == images.shape[1:] and not (
                images.compression or images.shuffle or images.scaleoffset or images.fletcher32)
            self.labels = f[LABELS][:].astype(np.int32) if labelled else np.zeros(self.n, np.int32)
            if in_memory:
                self._images = images[:]

    def _chunk(self, c: int) -> np.ndarray:
        """Chunk c's rows; a raw read lands in this thread's buffer, valid until its next read."""
        if self._dataset is None:
            self._file = h5py.File(self.path, "r")
            self._dataset = self._file[IMAGES]
        start = c * self.chunk_rows
        rows = min(self.chunk_rows, self.n - start)
        if not self._raw_chunks:
            return self._dataset[start: start + rows]
        buf = getattr(self._thread, "buf", None)
        if buf is None:
            buf = self._thread.buf = np.empty((self.chunk_rows, *self.row_shape), np.uint8)
        self._dataset.id.read_direct_chunk((start, 0, 0, 0), out=buf.reshape(-1))
        return buf[:rows]

    def __call__(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = idx[idx >= 0]
        labels = self.labels[idx]
        if self.in_memory:
            return self._images[idx], labels
        # Each chunk is read once and its rows copied straight to their places: the call holds the
        # group and one chunk, not a stacked copy of every chunk besides.
        chunk_of = idx // self.chunk_rows
        by_chunk = np.argsort(chunk_of, kind="stable")
        starts = np.flatnonzero(np.diff(chunk_of[by_chunk])) + 1
        out = np.empty((len(idx), *self.row_shape), np.uint8)
        for places in np.split(by_chunk, starts) if len(idx) else []:
            with self._lock:
                chunk = self._chunk(int(chunk_of[places[0]]))
            out[places] = chunk[idx[places] % self.chunk_rows]
        return out, labels


@dataclass
class SplitDataset:
    """A tf.data pipeline over one split, with what the trainer needs to know about it."""

    dataset: tf.data.Dataset
    info: SplitInfo
    steps: int
    batch_size: int
    in_memory: bool
    plan: EpochPlan

    def callback(self) -> Any:
        """The Keras callback that ties the shuffle order to the epoch index (resume-exact)."""
        return self.plan.callback()


def fits_in_memory(info: SplitInfo, memory_budget_mb: float) -> bool:
    """Whether the split's pixels fit the budget (uint8, as stored)."""
    size = info.n * info.image_size * info.image_size * 3
    return size <= memory_budget_mb * 2**20


def make_dataset(
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    batch_size: int,
    training: bool,
    augmentation: Augmentation | None = None,
    one_hot: bool = False,
    smoothing: float = 0.0,
    class_weights: list[float] | None = None,
    seed: int = 0,
    memory_budget_mb: float = TrainConfig.memory_budget_mb,
    stream_chunks: int = DEFAULT_STREAM_CHUNKS,
    with_labels: bool = True,
    weights_start_epoch: int = 0,
    mixing: Mixing | None = None,
) -> SplitDataset:
    """Build the tf.data pipeline for one split.

    Args:
        batch_size: the global batch (per-replica batch x replicas).
        training: reshuffle every epoch, augment, and drop the last partial batch.
        one_hot: one-hot float targets instead of sparse int labels.
        smoothing: with one_hot, targets become onehot * (1 - s) + s / K on the fly
            (label_smoothing.mode "labels"); the file is never rewritten.
        class_weights: per class index; adds a per-sample weight as the third element.
        memory_budget_mb: load the split into memory when its pixels fit, else stream from h5py
            with the group size, parallelism and prefetch of `stream_plan` for this budget.
        stream_chunks: the most HDF5 chunks shuffled together per group when streaming.
        with_labels: False yields images only (prediction).
        weights_start_epoch: deferred re-weighting: sample weights are 1 in epochs before this one.
        mixing: mixup/cutmix on each training batch (needs one_hot); sample weights are mixed
            like the targets.

    Returns:
        A SplitDataset whose `dataset` yields (x, y), (x, y, w) or x batches of float32 images.
        Let go of an iterator over it before the interpreter exits (Keras' fit and predict do): a
        streamed read still in flight at shutdown cannot take the GIL, and the exit waits on it
        forever (tensorflow/tensorflow#21277).

    Raises:
        DataError: an empty split, or labels asked for on an unlabelled split.
    """
    path = Path(path)
    info = read_info(path)
    if info.n == 0:
        raise DataError(f"{path} has no rows: re-run ingest (is the source folder empty?)")
    if with_labels and not info.has_labels:
        raise DataError(f"{path} has no labels (a test split?): train and validate on labelled splits")
    num_classes = len(info.class_names)
    mixing = mixing if training and mixing is not None and mixing.active else None
    if mixing is not None and not one_hot:
        raise ValueError("mixup/cutmix need one-hot targets (one_hot=True)")
    if class_weights is not None and len(class_weights) != num_classes:
        raise DataError(f"{len(class_weights)} class weights for {num_classes} classes in {path}")
    in_memory = fits_in_memory(info, memory_budget_mb)
    reader = RowReader(path, in_memory, info.has_labels and with_labels)
    streamed_shuffle = training and not in_memory
    size = info.image_size
    stream = None
    if in_memory:
        # Few, large reads: one numpy_function call per ~2048 rows, re-cut into batches by rebatch().
        group_rows = batch_size * max(1, GROUP_ROWS // batch_size)
    else:
        augmenting = training and (augmentation is not None or mixing is not None)
        stream = stream_plan(memory_budget_mb * 2**20, size * size * 3, batch_size, reader.chunk_rows,
                             float_copies=(augmentation or Augmentation()).float_copies if augmenting
                             else FLOAT_COPIES,
                             max_group_chunks=stream_chunks, max_maps=os.cpu_count() or 1)
        group_rows = stream.group_chunks * reader.chunk_rows
        log.info("streaming %s: %s (budget %s MB)", path.name, stream, memory_budget_mb)
        if stream.peak_bytes > memory_budget_mb * 2**20:
            log.warning("streaming %s holds up to %.0f MB, over train.memory_budget_mb %s even at its "
                        "smallest: raise the budget or lower train.batch_size", path.name,
                        stream.peak_bytes / 2**20, memory_budget_mb)
    plan = EpochPlan(info.n, group_rows, shuffle=training, streamed=streamed_shuffle, seed=seed,
                     drop_remainder=training, chunk_rows=reader.chunk_rows, batch_size=batch_size)
    weights = tf.constant(class_weights or [1.0], tf.float32)

    def read(gid: tf.Tensor, group: tf.Tensor, epoch: tf.Tensor) -> tuple[tf.Tensor, ...]:
        images, labels = tf.numpy_function(reader, [group], [tf.uint8, tf.int32], stateful=False)
        images.set_shape([None, size, size, 3])
        labels.set_shape([None])
        # Each row carries an id unique over epochs through rebatch(); a batch's first one seeds its augmentation.
        row_ids = gid * group_rows + tf.range(tf.shape(labels, out_type=tf.int64)[0])
        # ...and its epoch, which decides deferred re-weighting and whether batches are mixed.
        return images, labels, row_ids, tf.zeros_like(row_ids) + epoch

    def to_model_inputs(images: tf.Tensor, labels: tf.Tensor, row_ids: tf.Tensor, epochs: tf.Tensor) -> Any:
        x = preprocessing.to_float(images)
        batch_seed = tf.stack([tf.cast(seed, tf.int64), row_ids[0]])
        if training and augmentation is not None:
            x = augment(x, augmentation, batch_seed)
        if not with_labels:
            return x
        y: tf.Tensor = labels
        if one_hot:
            y = tf.one_hot(labels, num_classes, dtype=tf.float32)
            if smoothing:
                y = y * (1.0 - smoothing) + smoothing / num_classes
        w = None
        if class_weights is not None:
            w = tf.gather(weights, labels)
            if weights_start_epoch > 0:
                w = tf.where(epochs >= weights_start_epoch, w, tf.ones_like(w))
        if mixing is not None:
            x, y, w = mix_if_on(x, y, w, mixing, epochs[0], batch_seed + tf.constant([0, 7], tf.int64))
        return (x, y) if w is None else (x, y, w)

    def epoch_groups(_: tf.Tensor) -> tf.data.Dataset:
        groups, epoch = tf.numpy_function(plan.rows, [], [tf.int64, tf.int64], stateful=True)
        groups.set_shape([None, group_rows])
        epoch.set_shape([])
        n_groups = tf.cast(tf.shape(groups)[0], tf.int64)
        ids = tf.range(n_groups, dtype=tf.int64) + epoch * n_groups  # unique over epochs
        return tf.data.Dataset.from_tensor_slices((ids, groups, tf.fill([n_groups], epoch)))

    # Read a group of uint8 rows per call, re-cut them into batches, then scale and augment per batch
    # (cutting uint8 moves a quarter of the bytes that cutting float32 would). In memory, tf.data
    # tunes the parallelism and buffers; streamed, they are the plan's fixed numbers, which bound
    # what the pipeline holds (AUTOTUNE grows buffers with no regard to the budget).
    auto = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensors(0).flat_map(epoch_groups)
    ds = ds.map(read, num_parallel_calls=stream.reads if stream else auto, deterministic=True)
    ds = ds.rebatch(batch_size, drop_remainder=training and info.n >= batch_size)
    ds = ds.map(to_model_inputs, num_parallel_calls=stream.maps if stream else auto, deterministic=True)
    if training:
        steps = max(1, info.n // batch_size)
    else:
        steps = -(-info.n // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(stream.prefetch if stream else auto)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if stream:  # no buffers beyond the plan's: tf.data would otherwise inject and grow its own
        options.autotune.enabled = False
        options.experimental_optimization.inject_prefetch = False
        options.experimental_optimization.map_parallelization = False
    ds = ds.with_options(options)
    return SplitDataset(ds, info, steps, batch_size, in_memory, plan)

