"""The streamed pipeline's sizes from train.memory_budget_mb, and the reader that fills its groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from digits_training_data import write_digits_splits

from longtail.augmentation import AUGMENT_FLOAT_COPIES
from longtail.input_pipeline import (
    MAX_PREFETCH,
    MAX_READS,
    MIN_GROUP_CHUNKS,
    RowReader,
    stream_peak_bytes,
    stream_plan,
)

MB = 2**20
ROW_64PX = 64 * 64 * 3


@pytest.mark.parametrize("float_copies", [2, AUGMENT_FLOAT_COPIES])
@pytest.mark.parametrize(("row_bytes", "batch"), [(ROW_64PX, 128), (32 * 32 * 3, 256), (224 * 224 * 3, 32)])
def test_plan_stays_within_the_budget_and_grows_with_it(row_bytes: int, batch: int, float_copies: int) -> None:
    previous = None
    for budget_mb in (16, 32, 64, 96, 128, 256, 512, 2048):
        plan = stream_plan(budget_mb * MB, row_bytes, batch, 64, float_copies=float_copies)
        floor = stream_plan(0, row_bytes, batch, 64, float_copies=float_copies)
        assert plan.peak_bytes == stream_peak_bytes(plan.group_chunks * 64, plan.reads, plan.maps, plan.prefetch,
                                                    row_bytes, batch, float_copies)
        assert plan.peak_bytes <= budget_mb * MB or plan == floor
        if previous is not None:  # more budget never holds less
            for knob in ("group_chunks", "reads", "maps", "prefetch", "peak_bytes"):
                assert getattr(plan, knob) >= getattr(previous, knob), knob
        previous = plan
    assert (previous.group_chunks, previous.reads, previous.maps, previous.prefetch) == (32, MAX_READS, 2, MAX_PREFETCH)


def test_seed_scale_budget_of_64_mb() -> None:
    plan = stream_plan(64 * MB, ROW_64PX, 128, 64)
    assert plan.peak_bytes <= 64 * MB
    assert plan.maps == 2 and plan.group_chunks == MIN_GROUP_CHUNKS
    # Augmenting holds more per batch: at 64 MB that is the floor, and the plan says it is over.
    augmented = stream_plan(64 * MB, ROW_64PX, 128, 64, float_copies=AUGMENT_FLOAT_COPIES)
    assert augmented == stream_plan(0, ROW_64PX, 128, 64, float_copies=AUGMENT_FLOAT_COPIES)
    assert augmented.peak_bytes > 64 * MB
    assert stream_plan(96 * MB, ROW_64PX, 128, 64, float_copies=AUGMENT_FLOAT_COPIES).peak_bytes <= 96 * MB


def test_tiny_budget_keeps_a_working_floor_and_says_it_is_over() -> None:
    plan = stream_plan(0, ROW_64PX, 128, 64)
    assert (plan.group_chunks, plan.reads, plan.maps, plan.prefetch) == (MIN_GROUP_CHUNKS, 1, 1, 1)
    assert plan.peak_bytes > 0
    # A group still covers a whole batch, and an explicit cap on the group wins over the floor.
    assert stream_plan(0, ROW_64PX, 1024, 64).group_chunks == 16
    assert stream_plan(0, ROW_64PX, 128, 64, max_group_chunks=3).group_chunks == 3


def test_max_maps_caps_parallel_maps() -> None:
    assert stream_plan(2048 * MB, ROW_64PX, 128, 64, max_maps=8).maps == 8
    assert stream_plan(2048 * MB, ROW_64PX, 128, 64, max_maps=1).maps == 1


def test_streamed_reader_returns_the_rows_asked_for(tmp_path: Path) -> None:
    digits = write_digits_splits(tmp_path)  # 600 rows: the last 64-row chunk is partial
    reader = RowReader(digits.train_h5, in_memory=False, labelled=True)
    idx = np.random.default_rng(0).permutation(600)[:300]
    images, labels = reader(np.concatenate([idx, [-1, -1]]))  # -1 pads a group
    np.testing.assert_array_equal(images, digits.train_images[idx])
    np.testing.assert_array_equal(labels, digits.train_labels[idx])
    images, _ = reader(np.arange(590, 600))
    np.testing.assert_array_equal(images, digits.train_images[590:600])


@pytest.mark.slow
def test_training_streams_under_a_tiny_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from longtail.config import config_from_dict
    from longtail.training import train

    digits = write_digits_splits(tmp_path / "digits")
    cfg = config_from_dict({
        "name": "streamed", "model": {"name": "small_cnn", "args": {"width": 4}}, "weights": {"scheme": "none"},
        "train": {"epochs": 2, "batch_size": 32, "memory_budget_mb": 0, "lr": {"schedule": "constant", "initial": 0.05},
                  "augmentation": {"flip": True, "shift": 0.1}},
    })
    with caplog.at_level("INFO", logger="longtail.input_pipeline"):
        result = train(cfg, digits.train_h5, digits.val_h5, tmp_path / "model", progress=False)
    assert "streaming train.h5" in caplog.text and "streaming val.h5" in caplog.text
    assert result.epochs_run == 2 and result.steps_per_epoch == 600 // 32
    assert result.history["loss"][1] < result.history["loss"][0]
    assert (tmp_path / "model" / "model.keras").is_file()
