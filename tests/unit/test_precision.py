"""train.precision: the old key's error, `auto` per machine, and a bfloat16 model that predicts anywhere;
train.jit_compile: `auto` per machine, its refusal across replicas, and XLA steps that train like plain ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from digits_training_data import write_digits_splits

from longtail.config import config_from_dict
from longtail.errors import ConfigError
from longtail.knobs import KNOBS, apply_knobs
from longtail.model_dir import ModelDir
from longtail.precision import cpu_flags, resolve_jit_compile, resolve_precision

TINY = {
    "name": "tiny",
    "model": {"name": "small_cnn", "args": {"width": 4}},
    "weights": {"scheme": "none"},
    "train": {"epochs": 1, "batch_size": 32, "lr": {"schedule": "constant", "initial": 0.05}},
}
AMX = {"avx512f", "amx_bf16", "amx_tile", "avx512_bf16"}


def test_the_old_key_names_the_new_spelling() -> None:
    with pytest.raises(ConfigError, match=r"^config field train.mixed_precision is gone: write train.precision: "):
        config_from_dict({"train": {"mixed_precision": True}})
    with pytest.raises(ConfigError, match=r"train.precision must be one of float32, mixed_bfloat16, mixed_float16, auto"):
        config_from_dict({"train": {"precision": "bf16"}})


def test_precision_is_a_pipeline_knob() -> None:
    assert KNOBS["precision"] == "train.precision"
    assert apply_knobs({}, {"precision": "auto"}).train.precision == "auto"
    assert config_from_dict({}).train.precision == "float32"


@pytest.mark.parametrize(("choice", "gpus", "flags", "policy"), [
    ("auto", [(9, 0)], set(), "mixed_bfloat16"),  # H100/H200
    ("auto", [(8, 0), (7, 5)], set(), "mixed_float16"),  # the oldest GPU decides
    ("auto", [(6, 1)], set(), "float32"),  # no tensor cores
    ("auto", [], {"avx2", "fma"}, "float32"),  # a CPU without bfloat16 units
    ("mixed_float16", [], AMX, "float32"),  # CPUs have no float16 units
    ("mixed_float16", [(7, 0)], set(), "mixed_float16"),
    ("mixed_bfloat16", [], {"avx2"}, "mixed_bfloat16"),  # asked for by name: given, slow or not
    ("float32", [(9, 0)], AMX, "float32"),
])
def test_resolve_precision(choice, gpus, flags, policy) -> None:
    assert resolve_precision(choice, gpus, flags) == policy


def test_auto_on_a_bfloat16_cpu_follows_the_measured_choice() -> None:
    from longtail.precision import AUTO_ON_BF16_CPU

    assert resolve_precision("auto", [], AMX) == AUTO_ON_BF16_CPU


def test_cpu_flags_read_proc_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_a_bfloat16_model_records_its_precision_and_predicts_in_a_float32_process(tmp_path: Path) -> None:
    """Train under mixed_bfloat16 in one process; predict in another whose policy is float32."""
    from longtail.training import train

    digits = write_digits_splits(tmp_path / "digits")
    raw = json.loads(json.dumps(TINY))
    raw["train"]["precision"] = "mixed_bfloat16"
    result = train(config_from_dict(raw), digits.train_h5, digits.val_h5, tmp_path / "model", progress=False)
    assert result.precision == "mixed_bfloat16" and np.isfinite(result.history["loss"]).all()
    assert ModelDir(tmp_path / "model").precision() == "mixed_bfloat16"
    script = textwrap.dedent(f"""
        import json, keras
        from longtail.prediction import predict
        assert keras.config.dtype_policy().name == "float32"
        predict({str(tmp_path / 'model')!r}, {str(digits.val_h5)!r}, {str(tmp_path / 'sub.csv')!r})
        print(json.dumps(keras.config.dtype_policy().name))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (tmp_path / "sub.csv").read_text().splitlines()
    assert len(rows) == 1 + 200  # a header and every val image (write_digits_splits' n_val)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == "float32"


def test_jit_compile_is_a_pipeline_knob_taking_true_false_or_auto() -> None:
    assert KNOBS["jit_compile"] == "train.jit_compile"
    assert config_from_dict({}).train.jit_compile is False  # Keras' own default on a CPU
    assert apply_knobs({}, {"jit_compile": "auto"}).train.jit_compile == "auto"
    assert apply_knobs({}, {"jit_compile": "true"}).train.jit_compile is True
    with pytest.raises(ConfigError, match=r"train.jit_compile must be bool or 'auto', got 'xla'"):
        config_from_dict({"train": {"jit_compile": "xla"}})


AVX2_ONLY = {"fma", "avx2"}  # the AMD EPYC where XLA paid
AVX512 = {"fma", "avx2", "avx512f", "avx512_vnni"}  # the Intel Ice Lake where it did not


@pytest.mark.parametrize(("choice", "policy", "on_gpu", "replicas", "flags", "jit"), [
    ("auto", "float32", False, 1, AVX2_ONLY, True),  # one AVX2-only CPU in float32: where XLA was measured to pay
    ("auto", "float32", False, 1, AVX512, False),  # AVX-512: oneDNN's float32 kernels beat XLA's there
    ("auto", "float32", False, 2, AVX2_ONLY, False),  # mirrored replicas: XLA cannot compile their step
    ("auto", "mixed_bfloat16", False, 1, AVX2_ONLY, False),  # bfloat16 units: XLA was slower there
    ("auto", "float32", True, 1, AVX2_ONLY, False),  # GPUs: not measured, Keras' default
    (True, "mixed_bfloat16", True, 1, AVX512, True),  # asked for by name: given
    (True, "float32", False, 1, AVX512, True),
    (False, "float32", False, 4, AVX2_ONLY, False),
])
def test_resolve_jit_compile(choice, policy, on_gpu, replicas, flags, jit) -> None:
    assert resolve_jit_compile(choice, policy, on_gpu, replicas, flags=flags) is jit


def test_xla_across_replicas_is_refused_in_words() -> None:
    with pytest.raises(ConfigError, match=r"^config field train.jit_compile: true cannot train across 2 replicas"):
        resolve_jit_compile(True, "float32", False, 2, flags=AVX2_ONLY)


@pytest.mark.slow
def test_xla_steps_train_like_plain_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train.jit_compile true and false on the same data and seed: the same training, XLA-compiled or not."""
    from longtail.training import train

    digits = write_digits_splits(tmp_path / "digits")
    results = {}
    for jit in (False, True):
        raw = json.loads(json.dumps(TINY))
        raw["train"].update(epochs=2, jit_compile=jit)
        results[jit] = train(config_from_dict(raw), digits.train_h5, digits.val_h5, tmp_path / f"model-{jit}",
                             progress=False)
    plain, xla = results[False], results[True]
    assert (plain.jit_compile, xla.jit_compile) == (False, True)
    printed = capsys.readouterr().out
    assert "tiny: training in float32 (train.precision: float32), no XLA (train.jit_compile: false)" in printed
    assert "tiny: training in float32 (train.precision: float32), XLA-compiled (train.jit_compile: true)" in printed
    # XLA fuses and reorders float arithmetic, so not bit for bit; the same training, though.
    assert xla.history["loss"][0] == pytest.approx(plain.history["loss"][0], rel=1e-3)
    assert np.isfinite(xla.history["loss"]).all() and xla.history["loss"][1] < xla.history["loss"][0]
    assert ModelDir(tmp_path / "model-True").load_model().predict(np.zeros((2, 16, 16, 3)), verbose=0).shape[0] == 2
