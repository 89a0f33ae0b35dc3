"""Streams the decoded rows of one split into its HDF5 file, whole chunks at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from longtail.splits import SplitWriter

# Rows gathered before each HDF5 write: 16 chunks of 64, so every write fills whole chunks.
FLUSH_ROWS = 1024


@dataclass
class SplitSink:
    """Streams the decoded rows of one split into its file.

    Images go to the file a whole chunk at a time as they come: a block that starts on a chunk
    boundary is written straight from where it lies (a view of the pool's shared memory, reused once
    add returns), and rows that come in pieces (after a rejected file) are gathered into one chunk
    first. Ids and labels are written FLUSH_ROWS at a time.
    """

    writer: SplitWriter
    labelled: bool
    track_mean: bool
    images_done: int = 0  # rows whose images are in the file: a multiple of the chunk rows until finish()
    chunk: np.ndarray | None = None  # rows [images_done, images_done + staged) wait here for a whole chunk
    staged: int = 0
    ids_done: int = 0
    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    pixel_sum: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float64))
    classes: set[int] = field(default_factory=set)

    @property
    def written(self) -> int:
        """Rows added: those whose images are in the file and those gathered for the next chunk."""
        return self.images_done + self.staged

    def add(self, block: np.ndarray, ids: list[str], labels: list[int], channel_sums: np.ndarray) -> None:
        """Add rows (a block of images, their ids and labels); the block is not kept after this returns.

        channel_sums: the block's per-channel pixel sums (the worker took them), for the mean.
        """
        if not len(block):
            return
        if self.track_mean:
            self.pixel_sum += channel_sums
        self._add_images(block)
        self.ids.extend(ids)
        if self.labelled:
            self.labels.extend(labels)
            self.classes.update(labels)
        if len(self.ids) >= FLUSH_ROWS:
            self._write_ids()

    def _add_images(self, block: np.ndarray) -> None:
        rows = self.writer.chunk_rows
        i = 0
        if not self.staged:  # on a chunk boundary: the block's whole chunks go straight to the file
            i = len(block) // rows * rows
            if i:
                self.writer.write_images(self.images_done, block[:i])
                self.images_done += i
        if i == len(block):
            return
        if self.chunk is None:
            self.chunk = np.empty((rows, *block.shape[1:]), dtype=np.uint8)
        while i < len(block):
            take = min(rows - self.staged, len(block) - i)
            self.chunk[self.staged : self.staged + take] = block[i : i + take]
            self.staged, i = self.staged + take, i + take
            if self.staged == rows:
                self.writer.write_images(self.images_done, self.chunk)
                self.images_done, self.staged = self.images_done + rows, 0

    def _write_ids(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int32) if self.labelled else None
        self.writer.write_ids(self.ids_done, self.ids, labels)
        self.ids_done += len(self.ids)
        self.ids, self.labels = [], []

    def finish(self) -> None:
        """Write what is still gathered: the last, partial chunk of images, and the last ids and labels."""
        if self.staged and self.chunk is not None:
            self.writer.write_images(self.images_done, self.chunk[: self.staged])
            self.images_done, self.staged = self.images_done + self.staged, 0
        self._write_ids()
