"""predict(): the model's own preprocessing, rows matched by id, flip TTA, refused skewed splits."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from digits_models import CLASS_NAMES, INGEST, make_digits, train_model_dir

from longtail.errors import DataError
from longtail.model_dir import ModelDir
from longtail.prediction import predict, predict_probabilities, shift_pixels, tta_text, tta_views
from longtail.preprocessing import Preprocessing
from longtail.softmax import softmax
from longtail.splits import read_arrays, write_split
from longtail.submission import submission_id


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    data = make_digits(root / "data")
    models = {
        scale: train_model_dir(data, root / f"model_{scale}", scale=scale)
        for scale in ("scale", "mean_subtraction")
    }
    return data, models


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["scale", "mean_subtraction"])
def test_each_model_predicts_with_its_own_preprocessing(world, tmp_path, scale):
    data, models = world
    model_dir = models[scale]
    result = predict(model_dir, data.test_h5, tmp_path / "sub.csv")

    rows = read_csv(result.path)
    assert rows[0] == ["id", "label"]
    got = dict(rows[1:])
    truth = dict(zip(data.test_ids, (CLASS_NAMES[y] for y in data.test_labels), strict=True))
    assert result.n_rows == len(truth) == len(got)
    accuracy = np.mean([got[i] == truth[i] for i in truth])
    assert accuracy > 0.85, f"{scale}: accuracy {accuracy:.3f} through predict()"

    # Exactly the preprocessing the model was trained with, applied by hand:
    prep = ModelDir(model_dir).preprocessing()
    assert prep.scale == scale
    images, _, ids = read_arrays(data.test_h5)
    expected = ModelDir(model_dir).load_model().predict(prep.to_float(images), verbose=0).argmax(axis=1)
    assert [got[submission_id(i)] for i in ids] == [CLASS_NAMES[k] for k in expected]


@pytest.mark.slow
def test_the_other_preprocessing_would_be_wrong(world):
    """The two models really differ in what they expect, so the check above could fail."""
    data, models = world
    images, _, _ = read_arrays(data.test_h5)
    model = ModelDir(models["mean_subtraction"]).load_model()
    right = ModelDir(models["mean_subtraction"]).preprocessing()
    wrong = Preprocessing(image_size=8, class_names=CLASS_NAMES, scale="scale")
    p_right = model.predict(right.to_float(images), verbose=0)
    p_wrong = model.predict(wrong.to_float(images), verbose=0)
    assert not np.allclose(p_right, p_wrong, atol=1e-3)


@pytest.mark.slow
def test_rows_are_sorted_by_id_and_independent_of_file_order(world, tmp_path):
    data, models = world
    first = predict(models["scale"], data.test_h5, tmp_path / "a.csv")
    ids = [r[0] for r in read_csv(first.path)[1:]]
    assert ids == sorted(ids)
    assert all("/" not in i and "." not in i for i in ids)

    images, _, raw_ids = read_arrays(data.test_h5)
    flipped = tmp_path / "reversed.h5"
    perm = np.random.default_rng(1).permutation(len(images))
    write_split(
        flipped, images[perm], [raw_ids[i] for i in perm],
        class_names=CLASS_NAMES, image_size=8, preprocessing=INGEST, source_fingerprint="digits",
    )
    second = predict(models["scale"], flipped, tmp_path / "b.csv", batch_size=37)
    assert second.path.read_bytes() == first.path.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".jfif", ".jpe", ".JFIF"])
def test_every_extension_ingest_reads_is_stripped_from_submission_ids(world, tmp_path, ext):
    """Ingest reads x.jfif as an image, so the submission writes its id as plain x."""
    from longtail.decode import is_image_name

    assert is_image_name(f"x{ext}")
    data, models = world
    images, _, raw_ids = read_arrays(data.test_h5)
    renamed = [str(Path(i).with_suffix(ext)) for i in raw_ids]
    split = write_split(
        tmp_path / "test.h5", images, renamed,
        class_names=CLASS_NAMES, image_size=8, preprocessing=INGEST, source_fingerprint="digits",
    )
    got = [r[0] for r in read_csv(predict(models["scale"], split, tmp_path / "sub.csv").path)[1:]]
    assert sorted(got) == sorted(Path(i).stem for i in raw_ids)
    assert not any(ext.lower() in i.lower() for i in got)


@pytest.mark.slow
def test_custom_columns_and_no_leftover_temp_files(world, tmp_path):
    data, models = world
    out = tmp_path / "out" / "submission.csv"
    predict(models["scale"], data.test_h5, out, id_column="ImageId", label_column="Category")
    assert read_csv(out)[0] == ["ImageId", "Category"]
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]


@pytest.mark.slow
def test_flip_tta_averages_softmax_of_image_and_mirror(world, tmp_path):
    data, models = world
    model_dir = models["scale"]
    prep = ModelDir(model_dir).preprocessing()
    model = ModelDir(model_dir).load_model()
    probs = predict_probabilities(model, prep, data.val_h5, batch_size=100, tta=True)
    images, _, _ = read_arrays(data.val_h5)
    plain = softmax(model.predict(prep.to_float(images), verbose=0), np.float32)
    mirror = softmax(model.predict(prep.to_float(images[:, :, ::-1, :]), verbose=0), np.float32)
    np.testing.assert_allclose(probs, (plain + mirror) / 2, atol=1e-5)
    assert not np.allclose(probs, plain, atol=1e-3)  # digits are not mirror-symmetric

    result = predict(model_dir, data.test_h5, tmp_path / "tta.csv", tta=True)
    assert result.tta and result.n_rows == len(data.test_ids)


def test_tta_views_are_the_image_its_mirror_and_their_shifts_with_zeros_uncovered():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3) + 1  # no zero pixel of its own
    assert [v.shape for v in tta_views(x, flip=False, shift=0)] == [x.shape]
    flip_only = list(tta_views(x, flip=True, shift=0))
    np.testing.assert_array_equal(flip_only[1], x[:, :, ::-1])

    views = list(tta_views(x, flip=True, shift=1))
    assert len(views) == 10 and len(list(tta_views(x, flip=False, shift=2))) == 5
    right, right_mirror, left, _, down, _, up, _ = views[2:]
    np.testing.assert_array_equal(right[:, :, 1:], x[:, :, :-1])  # moved one pixel right
    np.testing.assert_array_equal(right_mirror, right[:, :, ::-1])
    np.testing.assert_array_equal(left[:, :, :-1], x[:, :, 1:])
    np.testing.assert_array_equal(down[:, 1:], x[:, :-1])
    np.testing.assert_array_equal(up[:, :-1], x[:, 1:])
    # What a shift uncovers is the model input's zero, as the train-time shift pads:
    assert not right[:, :, 0].any() and not left[:, :, -1].any() and not down[:, 0].any() and not up[:, -1].any()
    assert tta_text(True, 0.07) == "flip + 7% shift TTA" and tta_text(False, 0) == ""
    assert [shift_pixels(f, 28) for f in (0, 0.01, 0.036, 0.07, 0.107)] == [0, 1, 1, 2, 3]
    assert shift_pixels(0.07, 224) == 16


@pytest.mark.slow
def test_shift_tta_averages_every_view_and_is_logged(world, tmp_path):
    data, models = world
    model_dir = models["mean_subtraction"]  # its zero input is the mean pixel, not black
    prep = ModelDir(model_dir).preprocessing()
    model = ModelDir(model_dir).load_model()
    images, _, _ = read_arrays(data.val_h5)
    side = images.shape[1]
    probs = predict_probabilities(model, prep, data.val_h5, batch_size=64, tta=True, tta_shift=1 / side)
    x = prep.to_float(images)
    by_view = [softmax(model.predict(v, verbose=0), np.float32) for v in tta_views(x, flip=True, shift=1)]
    np.testing.assert_allclose(probs, np.mean(by_view, axis=0), atol=1e-5)
    flip_only = predict_probabilities(model, prep, data.val_h5, batch_size=64, tta=True)
    assert not np.allclose(probs, flip_only, atol=1e-3)

    result = predict(model_dir, data.test_h5, tmp_path / "shift.csv", tta=True, tta_shift=1 / side)
    assert result.tta_shift == 1 / side and result.n_rows == len(data.test_ids)
    with pytest.raises(DataError, match="a fraction of the image side"):
        predict_probabilities(model, prep, data.val_h5, tta_shift=0.5)
    with pytest.raises(DataError, match="a fraction of the image side"):
        predict_probabilities(model, prep, data.val_h5, tta_shift=-1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "named"),
    [({"clahe": True}, "clahe"), ({"white_balance": True}, "white_balance"), ({"resize": "aspect"}, "resize")],
)
def test_split_ingested_differently_is_refused(world, tmp_path, change, named):
    data, models = world
    images, _, ids = read_arrays(data.test_h5)
    skewed = write_split(
        tmp_path / "test.h5", images, ids, class_names=CLASS_NAMES, image_size=8,
        preprocessing={**INGEST, **change}, source_fingerprint="digits",
    )
    with pytest.raises(DataError, match=rf"{named}: model has .* split has .*Re-ingest"):
        predict(models["scale"], skewed, tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()


@pytest.mark.slow
def test_split_of_another_size_is_refused(world, tmp_path):
    _, models = world
    images = np.zeros((4, 16, 16, 3), np.uint8)
    big = write_split(
        tmp_path / "test16.h5", images, [f"{i}.png" for i in range(4)], class_names=CLASS_NAMES,
        image_size=16, preprocessing={**INGEST, "image_size": 16}, source_fingerprint="x",
    )
    with pytest.raises(DataError, match=r"image_size: model has 8, split has 16"):
        predict(models["scale"], big, tmp_path / "sub.csv")


@pytest.mark.slow
def test_ids_colliding_without_folders_are_an_error_and_keep_old_csv(world, tmp_path):
    _, models = world
    split = write_split(
        tmp_path / "t.h5", np.zeros((2, 8, 8, 3), np.uint8), ["a/1.png", "b/1.png"], class_names=CLASS_NAMES,
        image_size=8, preprocessing=INGEST, source_fingerprint="x",
    )
    out = tmp_path / "sub.csv"
    out.write_text("old\n")
    with pytest.raises(DataError, match=r"'1'.*unique file names"):
        predict(models["scale"], split, out)
    assert out.read_text() == "old\n"


@pytest.mark.slow
def test_model_dir_without_preprocessing_is_a_clear_error(world, tmp_path):
    data, models = world
    broken = tmp_path / "model"
    shutil.copytree(models["scale"], broken)
    (broken / "preprocessing.json").unlink()
    with pytest.raises(DataError, match="preprocessing.json is missing"):
        predict(broken, data.test_h5, tmp_path / "sub.csv")


@pytest.mark.slow
def test_without_mlflow_run_nothing_is_logged_and_it_says_so(world, tmp_path, caplog):
    data, models = world
    with caplog.at_level(logging.INFO, logger="longtail"):
        result = predict(models["scale"], data.test_h5, tmp_path / "sub.csv")
    assert result.mlflow_run_id is None
    assert "not logging to MLflow" in caplog.text


@pytest.mark.parametrize(
    ("raw", "want"),
    [("test/00042.png", "00042"), ("00042", "00042"), ("a\\b\\c.JPG", "c"), ("img.v2", "img.v2"), (" x/y.jpeg ", "y"),
     ("test/00042.jfif", "00042")],
)
def test_submission_id(raw, want):
    assert submission_id(raw) == want


def test_logits_become_probabilities():
    p = softmax(np.array([[2.0, -1.0, 0.5]]), np.float32)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
    assert p.argmax() == 0 and p.dtype == np.float32
    big = np.array([[1000.0, 999.0]])  # shifted by the row maximum: no overflow
    np.testing.assert_allclose(softmax(big), [[1 / (1 + np.exp(-1)), 1 / (1 + np.e)]])


@pytest.mark.slow
def test_cli_predict_writes_the_csv(world, tmp_path, capsys):
    from longtail.cli import main

    data, models = world
    out = tmp_path / "sub.csv"
    code = main(["predict", str(models["scale"]), str(data.test_h5), str(out), "--tta", "--id-column", "ImageId"])
    assert code == 0
    assert f"wrote {len(data.test_ids)} rows to {out} (flip TTA)" in capsys.readouterr().out
    assert read_csv(out)[0] == ["ImageId", "label"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "message"),
    [
        (lambda tmp: tmp, "is a folder; name a file inside it instead"),
        (lambda tmp: Path("/proc/longtail/sub.csv"), "cannot write submission CSV /proc/longtail/sub.csv"),
        (lambda tmp: tmp / "file" / "sub.csv", "cannot write submission CSV"),
    ],
)
def test_a_submission_path_that_cannot_be_a_file_is_one_line_before_predicting(world, tmp_path, capsys, monkeypatch,
                                                                               target, message):
    from longtail import prediction
    from longtail.cli import main

    data, models = world
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setattr(prediction.ModelDir, "load_model", lambda *a: pytest.fail("the model was loaded before the check"))
    assert main(["predict", str(models["scale"]), str(data.test_h5), str(target(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("longtail predict: error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.slow
def test_predict_applies_the_stored_posthoc_tau(world, tmp_path):
    from longtail.logit_adjustment import LogitAdjustment

    data, models = world
    model_dir = tmp_path / "adjusted"
    shutil.copytree(models["scale"], model_dir)
    # A prior that makes "zero" common and "nine" rare: tau 2 moves predictions towards "nine".
    counts = [1000, 300, 300, 300, 300, 300, 300, 300, 300, 1]
    ModelDir(model_dir).save_adjustment(LogitAdjustment.from_counts(2.0, counts))
    got = dict(read_csv(predict(model_dir, data.test_h5, tmp_path / "sub.csv").path)[1:])

    images, _, ids = read_arrays(data.test_h5)
    prep = ModelDir(model_dir).preprocessing()
    probs = softmax(ModelDir(model_dir).load_model().predict(prep.to_float(images), verbose=0), np.float32)
    by_hand = (np.log(probs) - 2.0 * np.log(np.asarray(counts) / sum(counts))).argmax(axis=1)
    assert [got[submission_id(i)] for i in ids] == [CLASS_NAMES[k] for k in by_hand]
    assert np.mean(by_hand != probs.argmax(axis=1)) > 0.01  # the adjustment changed predictions
