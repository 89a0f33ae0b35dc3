"""`longtail COMMAND` imports that command's module only; `longtail --help` still lists them all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from longtail.cli import COMMANDS, build_parser, named_command


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ingest", "src", "out"], "ingest"),
        (["-v", "train", "--config", "c.yaml"], "train"),
        (["--verbose", "run", "x.yaml"], "run"),
        (["--help"], None),
        (["--version"], None),
        (["bogus", "ingest"], None),
        ([], None),
    ],
)
def test_named_command(argv: list[str], expected: str | None) -> None:
    assert named_command(argv) == expected


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return set(out)


def test_ingest_imports_neither_the_other_commands_nor_mlflow_runs() -> None:
    mods = _imported_after("from longtail.cli import build_parser; build_parser(['ingest', 'a', 'b'])")
    assert "longtail.commands.ingest" in mods
    others = {f"longtail.commands.{name}" for name in COMMANDS if name != "ingest"}
    assert not others & mods, sorted(others & mods)
    for heavy in ("longtail.tracking.model_runs", "longtail.evaluation", "mlflow", "tensorflow", "kfp"):
        assert heavy not in mods, heavy
    # Not even numpy, h5py or OpenCV: `longtail ingest` starts the decoders' fork server before it
    # imports them, so the server loads them on the other core meanwhile.
    for heavy in ("numpy", "h5py", "cv2", "longtail.ingest"):
        assert heavy not in mods, heavy


def test_full_parser_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["--help"]).parse_args(["--help"])
    help_text = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name} " in help_text, name


def test_unknown_command_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["bogus"]).parse_args(["bogus"])
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and "'ingest'" in err and "'promote'" in err


@pytest.mark.parametrize(("before", "after"), [(None, "1"), ("4", "4")])
def test_ingest_runs_without_an_openblas_thread_unless_asked(tmp_path, monkeypatch, before, after) -> None:
    """Ingest never calls BLAS; OpenBLAS's idle thread would spin beside the decoders. A value of the
    caller's own stays."""
    from longtail.errors import DataError

    if before is None:
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", before)
    args = build_parser(["ingest", "a", "b"]).parse_args(["ingest", str(tmp_path / "missing"), str(tmp_path / "out"),
                                                          "--workers", "1"])
    with pytest.raises(DataError, match="not found"):
        args.func(args)
    assert os.environ["OPENBLAS_NUM_THREADS"] == after


def test_ingest_plans_and_starts_its_pool_before_it_loads_the_decoders_or_h5py() -> None:
    """longtail.ingest itself imports neither OpenCV, Pillow nor h5py (nor the config and its YAML): it
    lists, plans and hands the pool its first batches first, and loads them while the pool decodes."""
    code = "import sys, longtail.ingest; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "longtail.ingest" in loaded and "numpy" in loaded  # the split's seeded shuffle
    for heavy in ("cv2", "PIL", "h5py", "yaml", "longtail.config", "longtail.decode", "longtail.splits"):
        assert heavy not in loaded, heavy
