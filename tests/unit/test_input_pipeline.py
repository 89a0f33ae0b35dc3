"""The HDF5 -> tf.data pipeline: mixed batches from a class-sorted file, exact scaling, streaming, smoothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from digits_training_data import write_digits_splits

from longtail.augmentation import Augmentation, Mixing
from longtail.input_pipeline import make_dataset
from longtail.preprocessing import Preprocessing
from longtail.splits import read_info


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    return write_digits_splits(tmp_path_factory.mktemp("digits"))


def preprocessing_for(path: Path, scale: str = "scale") -> Preprocessing:
    return Preprocessing.from_split(read_info(path), scale)


def rows(dataset) -> list[tuple[bytes, int]]:
    """(image bytes, label) of every row of one pass."""
    out = []
    for x, y in dataset:
        out += [(im.tobytes(), int(label)) for im, label in zip(x.numpy(), y.numpy(), strict=True)]
    return out


# Streamed: groups of 4 random 64-row chunks of a 600-row file (each chunk spans 1-2 classes), so a
# batch mixes fewer classes than a whole-file permutation, but never one alone.
@pytest.mark.parametrize(("budget_mb", "min_classes"), [(2048, 5), (0, 3)], ids=["in_memory", "streamed"])
def test_class_sorted_file_gives_mixed_batches_reshuffled_each_epoch(digits, budget_mb: int,
                                                                     min_classes: int) -> None:
    assert np.all(np.diff(read_info(digits.train_h5).labels) >= 0)  # the file is sorted by class
    sd = make_dataset(digits.train_h5, preprocessing_for(digits.train_h5), batch_size=64, training=True,
                      memory_budget_mb=budget_mb, stream_chunks=4)
    assert sd.in_memory == (budget_mb > 0)
    epochs = [[y.numpy() for _, y in sd.dataset] for _ in range(2)]
    for batches in epochs:
        assert len(batches) == sd.steps == 600 // 64
        assert min(len(set(b.tolist())) for b in batches) >= min_classes, "a batch holds too few classes"
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))


def test_scale_is_exact_and_eval_order_is_file_order(digits) -> None:
    sd = make_dataset(digits.train_h5, preprocessing_for(digits.train_h5), batch_size=64, training=False)
    x = np.concatenate([x.numpy() for x, _ in sd.dataset])
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, digits.train_images.astype(np.float32) / 255.0, rtol=0, atol=1e-7)


def test_in_memory_and_streamed_give_the_same_rows(digits) -> None:
    pre = preprocessing_for(digits.train_h5)
    kwargs = dict(batch_size=50, training=True, augmentation=None, stream_chunks=3)  # 600 = 12 x 50
    memory = rows(make_dataset(digits.train_h5, pre, memory_budget_mb=2048, **kwargs).dataset)
    streamed = rows(make_dataset(digits.train_h5, pre, memory_budget_mb=0, **kwargs).dataset)
    expected = [((im.astype(np.float32) / 255).tobytes(), int(y))
                for im, y in zip(digits.train_images, digits.train_labels, strict=True)]
    assert Counter(memory) == Counter(expected)
    assert Counter(streamed) == Counter(expected)
    assert memory != streamed  # both shuffled, differently


def test_resumed_epoch_sees_the_same_order(digits) -> None:
    pre = preprocessing_for(digits.train_h5)
    aug = Augmentation(flip=True, shift=0.1)
    first = make_dataset(digits.train_h5, pre, batch_size=64, training=True, augmentation=aug, seed=3)
    natural = [np.concatenate([x.numpy() for x, _ in first.dataset]) for _ in range(3)]
    resumed = make_dataset(digits.train_h5, pre, batch_size=64, training=True, augmentation=aug, seed=3)
    resumed.plan.set_epoch(2)  # what the epoch callback does when Keras resumes at epoch 2
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in resumed.dataset]), natural[2])


def test_augmentation_flips_and_shifts_on_the_fly(digits) -> None:
    pre = preprocessing_for(digits.train_h5)
    plain = make_dataset(digits.train_h5, pre, batch_size=600, training=True, augmentation=None, seed=1)
    aug = make_dataset(digits.train_h5, pre, batch_size=600, training=True,
                       augmentation=Augmentation(flip=True, shift=0.125), seed=1)
    (x0, y0), (x1, y1) = next(iter(plain.dataset)), next(iter(aug.dataset))
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())  # same rows in the same order
    changed = np.any(x0.numpy() != x1.numpy(), axis=(1, 2, 3)).mean()
    assert changed > 0.8
    # Shifting moves pixels but keeps the digit's ink (no wrap-around): totals stay close.
    assert abs(float(x1.numpy().sum()) / float(x0.numpy().sum()) - 1) < 0.1


@pytest.mark.parametrize("probability", [1.0, 0.5])
def test_random_erasing_replaces_one_box_per_chosen_image_with_noise(digits, probability: float) -> None:
    pre = preprocessing_for(digits.train_h5)
    plain = make_dataset(digits.train_h5, pre, batch_size=600, training=True, augmentation=None, seed=1)
    erased = make_dataset(digits.train_h5, pre, batch_size=600, training=True,
                          augmentation=Augmentation(flip=False, shift=0.0, erase=probability), seed=1)
    (x0, y0), (x1, y1) = next(iter(plain.dataset)), next(iter(erased.dataset))
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())
    x0, x1 = x0.numpy(), x1.numpy()
    changed = np.any(x0 != x1, axis=3)  # (n, h, w): where the box fell
    hit = changed.any(axis=(1, 2))
    # The chance per image, within 5 standard errors of a binomial over 600 images.
    assert abs(hit.mean() - probability) <= 5 * np.sqrt(probability * (1 - probability) / len(hit)) + 0.02
    h, w = x0.shape[1:3]
    for box in changed[hit]:
        rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
        # One axis-aligned box (noise can equal a pixel by chance only at a measure-zero rate) ...
        assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() > 0.95
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) / (h * w)
        # ... of 2-40% of the image, rounded to whole pixels and cut at the border.
        assert 0.0 < area <= 0.4 + 2 * (h + w) / (h * w)
    assert x1.min() >= x0.min() and x1.max() <= x0.max() + 1e-5  # noise within the batch's range
    np.testing.assert_array_equal(x1[~hit], x0[~hit])  # images not chosen are untouched
    again = next(iter(make_dataset(digits.train_h5, pre, batch_size=600, training=True,
                                   augmentation=Augmentation(flip=False, shift=0.0, erase=probability),
                                   seed=1).dataset))[0].numpy()
    np.testing.assert_array_equal(again, x1)  # stateless: the same seed erases the same boxes


def test_label_smoothing_on_the_fly_leaves_the_file_alone(digits) -> None:
    before = h5py.File(digits.train_h5, "r")["labels"][:]
    sd = make_dataset(digits.train_h5, preprocessing_for(digits.train_h5), batch_size=64, training=False,
                      one_hot=True, smoothing=0.1)
    y = np.concatenate([y.numpy() for _, y in sd.dataset])
    expected = np.full((600, 10), 0.01, np.float32)
    expected[np.arange(600), digits.train_labels] = 0.91
    np.testing.assert_allclose(y, expected, atol=1e-6)
    np.testing.assert_array_equal(h5py.File(digits.train_h5, "r")["labels"][:], before)


def test_class_weights_become_sample_weights(digits) -> None:
    weights = [float(c + 1) for c in range(10)]
    sd = make_dataset(digits.train_h5, preprocessing_for(digits.train_h5), batch_size=64, training=True,
                      class_weights=weights)
    for _, y, w in sd.dataset.take(3):
        np.testing.assert_array_equal(w.numpy(), y.numpy() + 1.0)


def test_clahe_white_balance_and_mean_subtraction_give_centred_finite_floats(tmp_path: Path) -> None:
    from longtail.decode import clahe, gray_world

    splits = write_digits_splits(tmp_path, colour=lambda im: clahe(gray_world(im)), clahe=True,
                                 white_balance=True)
    pre = preprocessing_for(splits.train_h5, "mean_subtraction")
    assert pre.clahe and pre.white_balance
    sd = make_dataset(splits.train_h5, pre, batch_size=64, training=False)
    x = np.concatenate([x.numpy() for x, _ in sd.dataset])
    assert x.dtype == np.float32 and np.isfinite(x).all()
    # (x - mean_rgb) / 255 in float32: centred per channel, within [-1, 1], never a uint8 wrap-around.
    assert np.abs(x.reshape(-1, 3).mean(axis=0)).max() < 1e-3
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.05


def test_empty_and_unlabelled_splits_are_refused(tmp_path: Path) -> None:
    from longtail.errors import DataError
    from longtail.splits import write_split

    common = dict(class_names=["a", "b"], image_size=16, preprocessing={}, source_fingerprint="x")
    empty = write_split(tmp_path / "empty.h5", np.zeros((0, 16, 16, 3), np.uint8), [],
                        labels=np.zeros(0, np.int32), **common)
    test = write_split(tmp_path / "test.h5", np.zeros((2, 16, 16, 3), np.uint8), ["a", "b"], **common)
    pre = Preprocessing(image_size=16, class_names=["a", "b"])
    with pytest.raises(DataError, match="no rows"):
        make_dataset(empty, pre, batch_size=4, training=True)
    with pytest.raises(DataError, match="no labels"):
        make_dataset(test, pre, batch_size=4, training=True)


def test_deferred_reweighting_switches_class_weights_on_at_start_epoch(digits) -> None:
    weights = [0.5 + c for c in range(10)]
    ds = make_dataset(digits.train_h5, preprocessing_for(digits.train_h5), batch_size=100, training=True,
                      class_weights=weights, weights_start_epoch=2)
    for epoch in range(4):
        ds.plan.set_epoch(epoch)
        for _, y, w in ds.dataset:
            expected = np.asarray(weights, np.float32)[y.numpy()] if epoch >= 2 else np.ones(len(y), np.float32)
            np.testing.assert_array_equal(w.numpy(), expected, err_msg=f"epoch {epoch}")


def constant_rows(tmp_path: Path) -> Path:
    """Ten 8x8 images, image i filled with 20 * (i + 1) and labelled i: a pixel tells which row it came from."""
    from longtail.splits import write_split

    images = np.stack([np.full((8, 8, 3), 20 * (i + 1), np.uint8) for i in range(10)])
    return write_split(tmp_path / "rows.h5", images, [f"{i}.png" for i in range(10)], labels=np.arange(10),
                       class_names=[str(i) for i in range(10)], image_size=8,
                       preprocessing={"image_size": 8}, source_fingerprint="rows")


@pytest.mark.parametrize("mixing", [Mixing(mixup=1.0), Mixing(cutmix=1.0), Mixing(mixup=0.4, cutmix=1.0)],
                         ids=["mixup", "cutmix", "both"])
def test_mixed_targets_and_weights_are_the_same_convex_combination_as_the_images(tmp_path: Path,
                                                                               mixing: Mixing) -> None:
    path = constant_rows(tmp_path)
    weights = [1.0 + c for c in range(10)]
    ds = make_dataset(path, preprocessing_for(path), batch_size=10, training=True, one_hot=True,
                      class_weights=weights, mixing=mixing, seed=3)
    lams = []
    for epoch in range(6):
        ds.plan.set_epoch(epoch)
        x, y, w = next(iter(ds.dataset))
        x, y, w = x.numpy().astype(np.float64), y.numpy().astype(np.float64), w.numpy()
        for i in range(10):
            # Row i is mixed with one other row: its pixels are lam * own + (1 - lam) * other, where
            # the row's two target classes tell which rows (image c is filled with 20 * (c + 1)).
            own, other = np.argsort(y[i])[::-1][:2]
            value_own, value_other = 20 * (own + 1) / 255.0, 20 * (other + 1) / 255.0
            lam_pixels = (x[i].mean() - value_other) / (value_own - value_other)
            assert y[i, own] == pytest.approx(lam_pixels, abs=1e-5), (epoch, i)
            assert y[i].sum() == pytest.approx(1.0, abs=1e-6)
            assert w[i] == pytest.approx(lam_pixels * weights[own] + (1 - lam_pixels) * weights[other], rel=1e-5)
            lams.append(y[i, own])
    assert len({round(v, 4) for v in lams}) > 2  # a fresh mixing weight per batch


def test_mixing_is_off_in_the_last_epochs(tmp_path: Path) -> None:
    path = constant_rows(tmp_path)
    ds = make_dataset(path, preprocessing_for(path), batch_size=10, training=True, one_hot=True,
                      mixing=Mixing(mixup=1.0, until_epoch=2))
    for epoch, mixed in [(0, True), (1, True), (2, False), (3, False)]:
        ds.plan.set_epoch(epoch)
        _, y = next(iter(ds.dataset))
        assert (y.numpy().max() < 1.0) == mixed, epoch


@pytest.mark.parametrize("scale", ["scale", "mean_subtraction"])
def test_scaling_in_the_graph_equals_scaling_in_numpy(scale: str) -> None:
    import tensorflow as tf

    pre = Preprocessing(image_size=8, class_names=["a"], scale=scale, mean_rgb=[120.5, 110.25, 99.75])
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pre.to_float(tf.constant(images)).numpy(), pre.to_float(images))
    np.testing.assert_array_equal(pre.to_float(tf.constant(images[0])).numpy(), pre.to_float(images[0]))
