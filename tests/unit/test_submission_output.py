"""The training pipeline's submission output: the gate-closed note, and kfp.local resolving the OneOf that returns it."""

import pytest
from kfp import dsl
from kfp.local.io import IOStore
from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils
from kfp.pipeline_spec import pipeline_spec_pb2

from longtail.errors import DataError
from longtail.pipelines.local_session import one_of_artifacts
from longtail.submission import is_skipped_submission, read_submission, write_skipped_submission


def test_a_closed_gate_writes_a_note_marked_skipped_that_never_reads_as_a_submission(tmp_path):
    path = tmp_path / "submission"
    metadata = write_skipped_submission(path, "macro-F1 0.4120 < evaluate.min_macro_f1 0.9000")
    assert path.read_text() == "No submission: the evaluation gate closed (macro-F1 0.4120 < evaluate.min_macro_f1 0.9000).\n"
    assert metadata == {"skipped": True, "reason": "macro-F1 0.4120 < evaluate.min_macro_f1 0.9000", "rows": 0}
    assert is_skipped_submission(metadata)
    with pytest.raises(DataError, match="has no column 'id'"):
        read_submission(path)


def test_a_written_submission_is_not_skipped():
    assert not is_skipped_submission({"rows": 12})
    assert not is_skipped_submission({})


def one_of(*branches):
    """The If/Else group's DAG outputs: one artifact output selected from each branch's task."""
    spec = pipeline_spec_pb2.DagOutputsSpec()
    for task in branches:
        selector = spec.artifacts["submission"].artifact_selectors.add()
        selector.producer_subtask, selector.output_artifact_key = task, "submission"
    return spec


def ran(*tasks):
    store = IOStore()
    for task in tasks:
        store.put_task_output(task, "submission", dsl.Dataset(name="submission", uri=f"/root/{task}/submission"))
    return store


@pytest.mark.parametrize("branch", ["condition-2", "condition-3"])
def test_kfp_local_gets_the_artifact_of_the_branch_that_ran(branch):
    with one_of_artifacts():
        outputs = OrchestratorUtils.get_dag_outputs(one_of("condition-2", "condition-3"), ran(branch))
    assert outputs["submission"].uri == f"/root/{branch}/submission"


def test_none_or_both_branches_having_run_is_an_error():
    with one_of_artifacts():
        with pytest.raises(ValueError, match="none of its 2 producers ran"):
            OrchestratorUtils.get_dag_outputs(one_of("condition-2", "condition-3"), ran())
        with pytest.raises(ValueError, match="2 of its 2 producers ran"):
            OrchestratorUtils.get_dag_outputs(one_of("condition-2", "condition-3"), ran("condition-2", "condition-3"))


def test_the_workaround_is_still_needed_and_is_undone_after_the_run():
    with one_of_artifacts():
        pass
    # When this fails, kfp.local resolves artifact OneOf itself: drop one_of_artifacts from pipelines/local_session.py.
    with pytest.raises(ValueError, match="Expected 1 artifact in ArtifactSelectorSpec. Got: 2"):
        OrchestratorUtils.get_dag_outputs(one_of("condition-2", "condition-3"), ran("condition-2"))
    # A single selector still resolves as kfp.local does.
    assert OrchestratorUtils.get_dag_outputs(one_of("train"), ran("train"))["submission"].uri == "/root/train/submission"
