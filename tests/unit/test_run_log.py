"""The terminal view of a local run: kfp.local's log lines in, step and epoch lines out, everything in the file."""

import io
import json

from longtail.run_log import EPOCH_LINE, RunConsole, format_duration, format_epoch_line, step_figure

CYAN, GREEN, RED, RESET = "\033[96m", "\033[92m", "\033[91m", "\033[0m"


def kfp_task(name: str, streamed: list[str], status: str = "SUCCESS") -> str:
    """What kfp.local (2.17) writes for one task: its log lines, the task's indented output, the result."""
    colour = GREEN if status == "SUCCESS" else RED
    lines = [f"19:11:24.006 - INFO - Executing task {CYAN}'{name}'{RESET}", "19:11:24.007 - INFO - Streamed logs:", ""]
    lines += ["    " + s for s in streamed]
    lines += [f"19:11:30.001 - INFO - Task {CYAN}'{name}'{RESET} finished with status {colour}{status}{RESET}"]
    return "\n".join(lines) + "\n"


EXECUTOR_INPUT = json.dumps({"inputs": {"parameterValues": {"config": {"name": "demo"}}}}, indent=4).splitlines()


def test_the_terminal_gets_step_and_epoch_lines_and_the_file_gets_everything(tmp_path):
    terminal = io.StringIO()
    console = RunConsole(tmp_path / "run.log", terminal, figure=lambda task: f"figure of {task}")
    epoch = format_epoch_line("demo", 1, 2, 0.5, 0.25, 3.0, 3.0)
    # Written in pieces, as print() and the logging handler do.
    text = kfp_task("train", [*EXECUTOR_INPUT, "some TensorFlow chatter", epoch])
    for i in range(0, len(text), 7):
        console.write(text[i:i + 7])
    console.close()
    shown = [line.strip() for line in terminal.getvalue().splitlines()]
    assert len(shown) == 3
    assert shown[0].endswith("train started")
    assert shown[1] == epoch
    assert "train done in" in shown[2] and shown[2].endswith(": figure of train")
    log = (tmp_path / "run.log").read_text()
    assert '"parameterValues": {' in log and "some TensorFlow chatter" in log and "\033[" not in log


def test_verbose_shows_the_whole_log(tmp_path):
    terminal = io.StringIO()
    console = RunConsole(tmp_path / "run.log", terminal, verbose=True)
    console.write(kfp_task("ingest", EXECUTOR_INPUT))
    console.close()
    assert '"parameterValues": {' in terminal.getvalue() and "started" not in terminal.getvalue()


def test_a_failed_step_is_named_with_its_own_last_error(tmp_path):
    terminal = io.StringIO()
    console = RunConsole(tmp_path / "run.log", terminal)
    console.write(kfp_task("ingest-2", ["Traceback (most recent call last):", '  File "x.py", line 1',
                                        "longtail.errors.DataError: no images found in /tmp/empty (0 files ignored)"],
                           status="FAILURE"))
    console.close()
    assert console.failed_task == "ingest-2"
    assert "ingest-2 FAILED after" in terminal.getvalue()
    assert console.last_error() == "longtail.errors.DataError: no images found in /tmp/empty (0 files ignored)"


def test_epoch_lines_are_recognised_where_they_are_printed():
    line = format_epoch_line("exp-a", 3, 14, 0.81234, 0.70123, 41.24, 453.0)
    assert line == "exp-a epoch 3/14: loss 0.8123, val macro-F1 0.7012, 41.2 s/epoch, ETA 7m 33s"
    assert EPOCH_LINE.match("        " + line).group(1) == line
    assert format_duration(5) == "5 s" and format_duration(3725) == "1h 02m"


def executor_output(task_dir, **metadata):
    """What kfp.local (2.17) leaves in a finished task's folder: each output artifact with its metadata."""
    task_dir.mkdir(parents=True)
    artifacts = {name: {"artifacts": [{"name": name, "uri": str(task_dir / name), "metadata": meta}]}
                 for name, meta in metadata.items()}
    (task_dir / "executor_output.json").write_text(json.dumps({"parameterValues": {"Output": "x"},
                                                               "artifacts": artifacts}))


def test_each_step_reports_its_key_figure_from_its_artifact_metadata(tmp_path):
    executor_output(tmp_path / "ingest", data={"n_images": 588, "n_classes": 10, "rejected": 1})
    executor_output(tmp_path / "ingest-2", data={"n_images": 300, "n_classes": 0, "rejected": 0})
    executor_output(tmp_path / "weights", class_weights={"scheme": "inverse-frequency", "min": 0.25, "max": 2.5})
    executor_output(tmp_path / "train", model={"run_id": "r", "epochs": 3, "best_val_macro_f1": 0.75,
                                               "final_val_macro_f1": 0.7})
    executor_output(tmp_path / "evaluate", report={}, plots={}, evaluation={},
                    metrics={"macro_f1": 0.7, "accuracy": 0.8, "gate_passed": 0.0})
    executor_output(tmp_path / "submit", submission={"rows": 2})
    executor_output(tmp_path / "skip-submission", submission={"skipped": True, "reason": "r", "rows": 0})
    executor_output(tmp_path / "compare", leaderboard={}, submission={"rows": 300})
    executor_output(tmp_path / "resolve-config")
    assert step_figure(tmp_path / "ingest") == "588 images in 10 classes, 1 rejected"
    assert step_figure(tmp_path / "ingest-2") == "300 images, 0 rejected"
    assert step_figure(tmp_path / "weights") == "class weights 0.25-2.5"
    assert step_figure(tmp_path / "train") == "val macro-F1 0.7000 (best 0.7500) after 3 epochs"
    assert step_figure(tmp_path / "evaluate") == "macro-F1 0.7000, gate closed"
    assert step_figure(tmp_path / "submit") == "2 submission rows"
    assert step_figure(tmp_path / "skip-submission") == "0 submission rows"
    assert step_figure(tmp_path / "compare") == "300 submission rows"
    assert step_figure(tmp_path / "resolve-config") == ""
    assert step_figure(tmp_path / "missing") == ""


def test_a_step_figure_never_fails_the_run(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "executor_output.json").write_text('{"artifacts": {"data"')
    executor_output(tmp_path / "odd", model={"epochs": "many"}, data={"n_images": 5})
    assert step_figure(tmp_path / "half") == ""
    assert step_figure(tmp_path / "odd") == ""


def test_the_first_failing_step_keeps_its_error_past_a_long_later_task(tmp_path):
    # kfp.local may run a sibling task (and print its executor input, hundreds of lines) after one failed.
    console = RunConsole(tmp_path / "run.log", io.StringIO())
    console.write("Executing task 'ingest-2'\n    longtail.errors.DataError: no images found in /x\n")
    console.write("Task 'ingest-2' finished with status FAILURE\nExecuting task 'ingest'\n")
    console.write("".join(f"    executor input line {i}\n" for i in range(1000)))
    console.write("Task 'ingest' finished with status SUCCESS\n")
    assert (console.failed_task, console.last_error()) == ("ingest-2", "longtail.errors.DataError: no images found in /x")
    console.close()


def test_a_sweeps_parallel_steps_each_report_their_own_figure_and_time(tmp_path, monkeypatch):
    import longtail.run_log as run_log
    from longtail.run_log import finished_task_dir

    root = tmp_path / "pipeline-root"
    sweep = root / "longtail-sweep-2"

    def finish(folder, final):
        executor_output(folder, model={"epochs": 2, "best_val_macro_f1": final, "final_val_macro_f1": final})

    # An earlier single run, then a sweep whose loop runs two iterations of the same tasks at once.
    finish(root / "longtail-training-1" / "train", 0.85)
    assert finished_task_dir(root, "evaluate") is None
    # Two "train" tasks start 0 s and 100 s in; the first ends at 300 s, the second at 310 s.
    clock = iter([0.0, 100.0, 300.0, 310.0])
    monkeypatch.setattr(run_log.time, "perf_counter", lambda: next(clock))
    terminal = io.StringIO()
    console = RunConsole(tmp_path / "run.log", terminal, figure=lambda task: step_figure(finished_task_dir(root, task)))
    start, end = kfp_task("train", []).splitlines()[0], kfp_task("train", []).splitlines()[-1]
    console.write(f"{start}\n{start}\n")
    finish(sweep / "for-loop-1-iteration-0" / "train", 0.80)
    console.write(f"{end}\n")
    finish(sweep / "for-loop-1-iteration-1" / "train", 0.90)
    console.write(f"{end}\n")
    console.close()
    done = [line.split("done in ")[1] for line in terminal.getvalue().splitlines() if "done in" in line]
    assert done == ["5m 00s: val macro-F1 0.8000 (best 0.8000) after 2 epochs",
                    "3m 30s: val macro-F1 0.9000 (best 0.9000) after 2 epochs"]
