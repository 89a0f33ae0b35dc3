"""Training: smoothing modes agree, class weights weigh as computed by hand, 2 replicas, resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from digits_training_data import write_digits_splits

from longtail.config import ExperimentConfig, LabelSmoothingConfig, config_from_dict
from longtail.input_pipeline import make_dataset
from longtail.preprocessing import Preprocessing
from longtail.splits import read_info

TINY = {
    "name": "tiny",
    "model": {"name": "small_cnn", "args": {"width": 4}},
    "weights": {"scheme": "none"},
    "train": {"epochs": 2, "batch_size": 32, "lr": {"schedule": "constant", "initial": 0.05}},
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    return write_digits_splits(tmp_path_factory.mktemp("digits"))


def tiny_config(**train: object) -> ExperimentConfig:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return config_from_dict(raw)


def first_batch(path: Path, **kwargs: object) -> tuple:
    pre = Preprocessing.from_split(read_info(path), "scale")
    return next(iter(make_dataset(path, pre, batch_size=600, training=False, **kwargs).dataset))


def test_smoothing_in_loss_equals_smoothing_in_labels(digits) -> None:
    from longtail.models import build_model
    from longtail.training import make_loss, target_encoding

    by_loss = LabelSmoothingConfig(factor=0.1, mode="loss")
    by_labels = LabelSmoothingConfig(factor=0.1, mode="labels")
    encode_loss, encode_labels = target_encoding(by_loss), target_encoding(by_labels)
    assert encode_loss == (True, 0.0) and encode_labels == (True, 0.1)
    x, y_loss = first_batch(digits.train_h5, one_hot=True, smoothing=encode_loss[1])
    _, y_labels = first_batch(digits.train_h5, one_hot=True, smoothing=encode_labels[1])
    import keras

    keras.utils.set_random_seed(0)
    # An untrained model is near-uniform, where smoothing hardly matters: sharpen its logits.
    logits = 30.0 * build_model("small_cnn", (16, 16, 3), 10, width=4)(x)
    counts = [1] * 10

    def loss_of(ls: LabelSmoothingConfig):
        return make_loss(tiny_config(label_smoothing={"factor": ls.factor, "mode": ls.mode}).train, counts)

    in_loss = float(loss_of(by_loss)(y_loss, logits))
    in_labels = float(loss_of(by_labels)(y_labels, logits))
    unsmoothed = float(loss_of(LabelSmoothingConfig())(np.argmax(y_loss, axis=1), logits))
    assert in_loss == pytest.approx(in_labels, rel=1e-5)
    assert abs(in_loss - unsmoothed) > 1e-3  # smoothing did something


def test_class_weights_scale_each_sample_loss(digits) -> None:
    import keras

    from longtail.models import build_model
    from longtail.training import make_accuracy, make_loss

    weights = [0.5 + c for c in range(10)]
    ls = LabelSmoothingConfig()
    x, y, w = first_batch(digits.train_h5, class_weights=weights)
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", (16, 16, 3), 10, width=4)
    model.compile(loss=make_loss(tiny_config().train, [1] * 10), metrics=[make_accuracy(ls)])
    logits = model.predict(x, verbose=0).astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = y.numpy()
    by_hand = np.mean(np.asarray(weights)[labels] * -np.log(probs[np.arange(len(labels)), labels]))
    unweighted = np.mean(-np.log(probs[np.arange(len(labels)), labels]))
    weighted_loss = model.evaluate(x, y, sample_weight=w, batch_size=600, verbose=0, return_dict=True)["loss"]
    assert weighted_loss == pytest.approx(by_hand, rel=1e-4)
    assert abs(by_hand - unweighted) > 0.1


@pytest.mark.slow
def test_two_replicas_train_with_the_global_batch(digits, tmp_path: Path) -> None:
    # Logical CPU devices must exist before TensorFlow initialises: a fresh interpreter.
    script = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from longtail.config import config_from_dict
        from longtail.training import train
        cfg = config_from_dict({TINY!r})
        cfg.train.epochs = 1
        r = train(cfg, {str(digits.train_h5)!r}, {str(digits.val_h5)!r}, {str(tmp_path / 'model')!r},
                  progress=False, devices=["/cpu:0", "/cpu:1"])
        print("RESULT", json.dumps(dict(replicas=r.replicas, global_batch=r.global_batch_size,
                                        steps=r.steps_per_epoch, epochs=r.epochs_run, f1=r.final_val_macro_f1)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    assert result["global_batch"] == 2 * TINY["train"]["batch_size"]
    assert result["steps"] == 600 // 64
    assert result["epochs"] == 1
    assert 0.0 <= result["f1"] <= 1.0
    assert (tmp_path / "model" / "model.keras").is_file()


class Interrupt(Exception):
    """Stands for a killed pod."""


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.9], ids=["plain", "weight-averaging"])
def test_killed_training_resumes_at_its_epoch_and_ends_like_an_uninterrupted_one(digits, tmp_path: Path,
                                                                                 ema: float) -> None:
    import keras
    import mlflow

    from longtail.model_dir import ModelDir
    from longtail.training import train

    class KillAfterEpoch(keras.callbacks.Callback):
        def __init__(self, epoch: int) -> None:
            super().__init__()
            self.epoch = epoch

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == self.epoch:
                raise Interrupt(f"killed after epoch {epoch}")

    cfg = tiny_config(epochs=3, deterministic=True, lr={"schedule": "poly", "initial": 0.05, "power": 1.0},
                      optimizer={"name": "sgd", "ema": ema})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        train(cfg, digits.train_h5, digits.val_h5, tmp_path / "resumed", tracking_uri=uri, checkpoint_dir=ckpt,
              progress=False, extra_callbacks=[KillAfterEpoch(1)])
    assert (ckpt / "resume.json").is_file()
    resumed = train(cfg, digits.train_h5, digits.val_h5, tmp_path / "resumed", tracking_uri=uri,
                    checkpoint_dir=ckpt, progress=False)
    straight = train(cfg, digits.train_h5, digits.val_h5, tmp_path / "straight", progress=False)

    assert resumed.resumed_from_epoch == 2
    assert resumed.epochs_run == straight.epochs_run == 3
    assert len(resumed.history["val_macro_f1"]) == 3
    assert resumed.history["learning_rate"] == pytest.approx(straight.history["learning_rate"])
    for a, b in zip(ModelDir(tmp_path / "resumed").load_model().get_weights(), ModelDir(tmp_path / "straight").load_model().get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not ckpt.exists()  # removed once finished
    client = mlflow.MlflowClient(uri)
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert sorted({m.step for m in client.get_metric_history(resumed.run_id, "val_macro_f1")}) == [0, 1, 2]
    assert len(client.search_runs([run.info.experiment_id])) == 1  # one run, resumed


def test_weight_averaging_is_what_val_scores_and_what_is_saved(digits, tmp_path: Path) -> None:
    from longtail.model_dir import ModelDir
    from longtail.softmax import softmax
    from longtail.training import train

    cfg = tiny_config(epochs=2, optimizer={"name": "sgd", "ema": 0.9})
    result = train(cfg, digits.train_h5, digits.val_h5, tmp_path / "ema", progress=False)
    straight = train(tiny_config(epochs=2), digits.train_h5, digits.val_h5, tmp_path / "plain", progress=False)
    images = first_batch(digits.val_h5, with_labels=False).numpy()
    labels = read_info(digits.val_h5).labels
    for run, folder in ((result, "ema"), (straight, "plain")):
        probs = softmax(ModelDir(tmp_path / folder).load_model().predict(images, verbose=0))
        val_loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)).mean())
        # The last epoch's val loss was measured on the weights that were saved: the averages, with EMA.
        assert val_loss == pytest.approx(run.history["val_loss"][-1], rel=1e-4)
    assert result.history["val_loss"] != pytest.approx(straight.history["val_loss"], rel=1e-4)
    assert result.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-4)  # same steps taken


def test_posthoc_tau_is_tuned_on_the_tta_predictions_evaluate_scores(digits, tmp_path: Path, monkeypatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    import longtail.training.fit as fit
    from longtail.logit_adjustment import choose_adjustment
    from longtail.model_dir import ModelDir
    from longtail.prediction import predict_probabilities
    from longtail.training import train

    caplog.set_level("INFO", logger=fit.__name__)
    calls = []
    monkeypatch.setattr(fit, "predict_probabilities", lambda *a, **kw: calls.append(kw) or predict_probabilities(*a, **kw))
    cfg = tiny_config(loss={"name": "cross_entropy", "args": {}})
    cfg.evaluate.posthoc_tau, cfg.evaluate.tta = "tune", True
    result = train(cfg, digits.train_h5, digits.val_h5, tmp_path / "model", progress=False)
    assert [kw.get("tta") for kw in calls] == [True]
    model_dir = ModelDir(tmp_path / "model")
    probs = predict_probabilities(model_dir.load_model(), ModelDir(tmp_path / "model").preprocessing(), digits.val_h5, tta=True)
    expected = choose_adjustment("tune", probs, read_info(digits.val_h5).labels, read_info(digits.train_h5).class_counts())
    assert result.posthoc_tau == expected.adjustment.tau == ModelDir(tmp_path / "model").adjustment().tau
    # The log shows the val curve the tau was chosen on, not only the winner.
    assert f"({expected.curve()})" in caplog.text
    # ... with the chosen tau's gain over none and its paired interval, and the same as a plot.
    assert expected.gain is None or expected.gain.text() in caplog.text
    assert model_dir.posthoc_plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lr.power=-1"], "config field train.lr.power must be > 0, got -1"),
    (["train.optimiser.name=sgd"], "unknown config field train.optimiser; did you mean train.optimizer?"),
    (["model.name=resnet_152"], "config field model.name: unknown model 'resnet_152'; known models: resnet50,"),
])
def test_bad_config_is_a_one_line_error_naming_the_field(digits, tmp_path: Path, capsys, overrides, message) -> None:
    from longtail.cli import main

    args = ["train", str(write_config(tmp_path, TINY)), "--train", str(digits.train_h5), "--val",
            str(digits.val_h5), "--out", str(tmp_path / "m"), "--no-tracking"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err


def test_mismatched_inputs_are_refused_before_training(tmp_path: Path) -> None:
    from longtail.errors import DataError
    from longtail.training import train

    other = write_digits_splits(tmp_path / "other", val_class_names=[f"c{i}" for i in range(10)])
    with pytest.raises(DataError, match="other class_names than train"):
        train(tiny_config(), other.train_h5, other.val_h5, tmp_path / "m1", progress=False)

    good = write_digits_splits(tmp_path / "good")
    wrong = tmp_path / "weights.json"
    wrong.write_text(json.dumps({"weights": [1.0] * 9}))
    with pytest.raises(DataError, match="has 9 weights but the train split has 10 classes"):
        train(tiny_config(), good.train_h5, good.val_h5, tmp_path / "m2", weights_json=wrong, progress=False)

    from longtail.decode import clahe
    enhanced = write_digits_splits(tmp_path / "clahe", colour=clahe, clahe=True)
    with pytest.raises(DataError, match="clahe: model has False, split has True"):
        train(tiny_config(), good.train_h5, enhanced.val_h5, tmp_path / "m3", progress=False)
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m3").exists()


def test_unreachable_tracking_server_fails_before_training(digits, tmp_path: Path) -> None:
    import socket

    from longtail.errors import LongtailError
    from longtail.training import train

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(LongtailError, match=f"127.0.0.1:{port} is unreachable"):
        train(tiny_config(), digits.train_h5, digits.val_h5, tmp_path / "m", tracking_uri=f"http://127.0.0.1:{port}",
              progress=False)
    assert not (tmp_path / "m").exists()


def test_checkpoint_dir_for_a_mounted_volume_is_keyed_by_run():
    from longtail.errors import ConfigError
    from longtail.training import checkpoint_dir_for

    assert checkpoint_dir_for("", "") is None
    assert checkpoint_dir_for("/checkpoints", "3f2a-run") == Path("/checkpoints/3f2a-run")
    with pytest.raises(ConfigError, match="plain name"):
        checkpoint_dir_for("/checkpoints", "../other")


@pytest.mark.slow
def test_long_tail_methods_train_together_and_store_the_tuned_tau(digits, tmp_path: Path) -> None:
    from longtail.logit_adjustment import TAU_GRID
    from longtail.model_dir import ModelDir
    from longtail.training import train

    cfg = tiny_config(loss={"name": "logit_adjusted", "args": {"tau": 1.0}},
                      augmentation={"mixup": 0.2, "cutmix": 1.0, "mix_off_last_epochs": 1})
    cfg.weights.start_epoch = 1
    cfg.evaluate.posthoc_tau = "tune"
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"weights": [1.0 + c / 10 for c in range(10)]}))
    result = train(cfg, digits.train_h5, digits.val_h5, tmp_path / "model", weights_json=weights, progress=False)
    assert result.epochs_run == 2 and np.isfinite(result.history["loss"]).all()
    stored = ModelDir(tmp_path / "model").adjustment()
    assert stored is not None and stored.tau == result.posthoc_tau and stored.tau in TAU_GRID
    counts = np.asarray(read_info(digits.train_h5).class_counts(), dtype=np.float64)
    np.testing.assert_allclose(stored.log_prior, np.log(counts / counts.sum()))
    saved = yaml.safe_load((tmp_path / "model" / "config.yaml").read_text())
    assert saved["train"]["loss"] == {"name": "logit_adjusted", "args": {"tau": 1.0}}


def test_weight_average_warms_up_as_computed_by_hand_over_20_steps() -> None:
    import keras

    from longtail.training.ema import WarmupSGD, ema_momentum_at

    rng = np.random.default_rng(0)
    grads = rng.normal(size=(20, 3)).astype(np.float32)
    var = keras.Variable(np.zeros(3, np.float32))
    opt = WarmupSGD(learning_rate=0.1, momentum=0.0, use_ema=True, ema_momentum=0.95)
    opt.build([var])
    expected = np.zeros(3)
    weights = np.zeros(3)
    momenta = []
    for t, g in enumerate(grads):
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
        weights = weights - 0.1 * g
        m = 0.0 if t == 0 else min(0.95, (1 + t) / (10 + t))
        momenta.append(m)
        expected = m * expected + (1 - m) * weights
        np.testing.assert_allclose(np.asarray(opt._model_variables_moving_average[0]), expected, rtol=1e-5, atol=1e-6)
    assert momenta == pytest.approx([ema_momentum_at(t, 0.95) for t in range(20)])
    # the warm-up is below Keras' constant momentum for the whole 20 steps: 21/29 = 0.72 at the last
    assert momenta[-1] == pytest.approx(20 / 29) and max(momenta) < 0.95
    # Keras' own average (0.95 from the second step on) stays further from the weights it averages
    keras_avg = -0.1 * grads[0]
    for t in range(1, 20):
        keras_avg = 0.95 * keras_avg + 0.05 * (-0.1 * grads[: t + 1].sum(axis=0))
    assert np.abs(expected - weights).max() < np.abs(keras_avg - weights).max()


def test_one_epoch_val_figure_with_weight_averaging_is_its_own_weights_figure(tmp_path: Path, monkeypatch) -> None:
    import longtail.training.ema as ema_module
    from longtail.training import train

    digits = write_digits_splits(tmp_path / "digits", n_train=1400, n_val=300)  # 88 steps of 16
    raw = {"name": "one-epoch", "weights": {"scheme": "none"},
           "model": {"name": "resnet_cifar", "args": {"stages": [1, 1, 1], "filters": [8, 8, 16, 32], "bottleneck": False}},
           "train": {"epochs": 1, "batch_size": 16, "deterministic": True, "lr": {"schedule": "constant", "initial": 0.02}}}

    def val_figure(ema: float, out: str) -> tuple[float, list[float]]:
        cfg = config_from_dict({**raw, "train": {**raw["train"], "optimizer": {"name": "sgd", "ema": ema}}})
        result = train(cfg, digits.train_h5, digits.val_h5, tmp_path / out, progress=False)
        return result.history["val_macro_f1"][0], result.history["loss"]

    plain, plain_loss = val_figure(0.0, "plain")
    averaged, averaged_loss = val_figure(0.995, "averaged")
    assert averaged_loss == pytest.approx(plain_loss, rel=1e-4)  # the same steps taken
    assert plain > 0.3  # a figure that is not chance, to be close to
    assert abs(averaged - plain) <= 0.02
    # Keras' own average (the momentum 0.995 from the second step on) scores what is mostly the initial network
    monkeypatch.setattr(ema_module, "WARMUP_OFFSET", 1.0)  # (1 + t) / (1 + t) = 1: min(ema, 1) = ema throughout
    constant, _ = val_figure(0.995, "constant")
    assert plain - constant > 0.2


def test_small_splits_train_in_smaller_batches_for_their_minimum_steps() -> None:
    from longtail.training.factories import batch_for_steps

    assert batch_for_steps(128, 12_000, 16) == 128  # Fashion-MNIST-LT: 93 steps, untouched
    assert batch_for_steps(128, 12_000, 0) == 128
    assert batch_for_steps(128, 471, 16) == 16  # digits-lt: 3 steps at 128, 29 at 16
    assert batch_for_steps(128, 222, 16) == 16  # a small folder: never below 16 ...
    assert batch_for_steps(8, 222, 16) == 8  # ... unless asked for less
    assert batch_for_steps(128, 2_048, 16) == 128  # exactly 16 steps
    assert batch_for_steps(128, 2_047, 16) == 64
    assert batch_for_steps(64, 2_047, 16, replicas=2) == 32  # the global batch gives the steps
