"""Scoring: sklearn's macro-F1 and report on known predictions, and submission CSVs rejected with named reasons."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, f1_score

from longtail.errors import DataError
from longtail.scoring import (
    REPORT_DIGITS,
    classification_scores,
    most_confused_classes,
    score,
    top_confusions,
)
from longtail.tracking.model_runs import record_lb

NAMES = ["cat", "dog", "eel", "fox"]


def write(path, text):
    path.write_text(text)
    return path


def test_macro_f1_equals_sklearn_on_known_predictions():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    y_pred = [0, 0, 1, 2, 1, 1, 2, 0, 2, 2]  # fox (3) is never predicted: its F1 is 0
    s = classification_scores(y_true, y_pred, NAMES)
    assert s.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert s.weighted_f1 == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert s.accuracy == pytest.approx(accuracy_score(y_true, y_pred)) == 0.6
    # By hand: cat P=2/3 R=2/4 -> F1 4/7; dog P=2/3 R=1 -> 0.8; eel P=2/4 R=2/3 -> 4/7; fox 0.
    assert s.macro_f1 == pytest.approx((4 / 7 + 0.8 + 4 / 7 + 0) / 4)
    assert [c.support for c in s.per_class] == [4, 2, 3, 1]
    assert s.confusion.tolist() == [[2, 1, 1, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 1, 0]]


def test_classes_absent_from_truth_and_predictions_stay_out_of_the_average():
    y_true, y_pred = [0, 0, 1, 1], [0, 1, 1, 1]
    s = classification_scores(y_true, y_pred, NAMES)  # eel and fox never occur
    assert s.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert [c.name for c in s.per_class] == ["cat", "dog"]
    assert s.confusion.shape == (4, 4)


def test_report_numbers_match_classification_report():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 4, 300))
    s = classification_scores(y_true, y_pred, NAMES)
    want = classification_report(y_true, y_pred, target_names=NAMES, digits=REPORT_DIGITS, output_dict=True)
    assert s.report_text == classification_report(y_true, y_pred, target_names=NAMES, digits=REPORT_DIGITS)
    for c in s.per_class:
        row = want[c.name]
        assert (c.precision, c.recall, c.f1, c.support) == pytest.approx(
            (row["precision"], row["recall"], row["f1-score"], row["support"])
        )
        # The text table shows the same numbers, rounded.
        line = next(ln for ln in s.report_text.splitlines() if ln.strip().startswith(c.name))
        assert [float(v) for v in line.split()[1:4]] == pytest.approx([c.precision, c.recall, c.f1], abs=1e-4)
    macro_line = next(ln for ln in s.report_text.splitlines() if "macro avg" in ln)
    assert float(macro_line.split()[4]) == pytest.approx(s.macro_f1, abs=1e-4)


def test_index_outside_class_names_is_an_error():
    with pytest.raises(DataError, match="class index 7 is outside the 4 class names"):
        classification_scores([0, 7], [0, 1], NAMES)


def test_most_confused_and_top_confusions():
    cm = np.array([[50, 0, 0, 0], [0, 30, 9, 0], [0, 2, 40, 0], [1, 0, 0, 5]])
    assert most_confused_classes(cm, 2).tolist() == [1, 2]
    assert most_confused_classes(cm, 9).tolist() == [0, 1, 2, 3]
    top = top_confusions(cm, NAMES, k=5)
    assert top[0] == {"true": "dog", "predicted": "eel", "count": 9, "fraction_of_true": pytest.approx(9 / 39)}
    assert [(t["true"], t["predicted"]) for t in top] == [("dog", "eel"), ("eel", "dog"), ("fox", "cat")]


@pytest.fixture
def labels_csv(tmp_path):
    return write(tmp_path / "labels.csv", "id,label\n1,cat\n2,dog\n3,eel\n4,fox\n5,cat\n")


def test_score_matches_sklearn_and_matches_ids_without_extensions(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,label\ntest/5.png,cat\n4,fox\n3,dog\n2,dog\n1,eel\n")
    r = score(sub, labels_csv)
    y_true = ["cat", "dog", "eel", "fox", "cat"]
    y_pred = ["eel", "dog", "dog", "fox", "cat"]
    assert r.n == 5
    assert r.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert r.accuracy == pytest.approx(0.6)
    assert "macro avg" in r.report_text and "fox" in r.report_text


def test_score_with_custom_columns(tmp_path):
    truth = write(tmp_path / "t.csv", "ImageId,Category\na,x\nb,y\n")
    sub = write(tmp_path / "s.csv", "Category,ImageId\ny,b\nx,a\n")
    assert score(sub, truth, id_column="ImageId", label_column="Category").macro_f1 == 1.0


def test_missing_id_is_named(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dog\n3,eel\n5,cat\n")
    with pytest.raises(DataError, match=r"missing 1 of 5 ids .* e\.g\. '4'"):
        score(sub, labels_csv)


def test_many_missing_ids_name_a_few_and_count(tmp_path):
    truth = write(tmp_path / "t.csv", "id,label\n" + "".join(f"{i},cat\n" for i in range(100)))
    sub = write(tmp_path / "s.csv", "id,label\n0,cat\n")
    with pytest.raises(DataError, match=r"missing 99 of 100 ids.*'1', '10', '11', '12', '13' and 94 more"):
        score(sub, truth)


def test_duplicate_id_is_named(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dog\n3,eel\n4,fox\n5,cat\n3,dog\n")
    with pytest.raises(DataError, match=r"submission CSV .* 1 duplicate ids, e\.g\. '3'"):
        score(sub, labels_csv)


def test_unknown_id_is_named(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dog\n3,eel\n4,fox\n5,cat\n99,cat\n")
    with pytest.raises(DataError, match=r"1 ids that are not in .*'99'"):
        score(sub, labels_csv)


def test_unknown_label_is_named(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dgo\n3,eel\n4,fox\n5,cat\n")
    with pytest.raises(DataError, match=r"1 rows with labels that are not class names, e\.g\. 'dgo' \(id 2\)"):
        score(sub, labels_csv)


def test_labels_outside_given_class_names(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dog\n3,eel\n4,fox\n5,cat\n")
    with pytest.raises(DataError, match=r"labels .* outside the class names, e\.g\. 'eel', 'fox'"):
        score(sub, labels_csv, class_names=["cat", "dog"])


def test_missing_column_is_named(tmp_path, labels_csv):
    sub = write(tmp_path / "sub.csv", "id,prediction\n1,cat\n")
    with pytest.raises(DataError, match=r"no column 'label' \(its columns: id, prediction\); rename it or pass --label-column"):
        score(sub, labels_csv)


@pytest.mark.parametrize(("text", "message"), [("", "is empty"), ("id,label\n", "has a header but no rows")])
def test_empty_submission(tmp_path, labels_csv, text, message):
    with pytest.raises(DataError, match=message):
        score(write(tmp_path / "sub.csv", text), labels_csv)


def test_missing_file_is_named(tmp_path, labels_csv):
    with pytest.raises(DataError, match=r"submission CSV not found: .*nope\.csv"):
        score(tmp_path / "nope.csv", labels_csv)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), True])
def test_record_lb_rejects_scores_that_are_not_macro_f1(bad, tmp_path):
    with pytest.raises(DataError, match="leaderboard score must be"):
        record_lb("abc", bad, f"sqlite:///{tmp_path}/never-created.db")
    assert not (tmp_path / "never-created.db").exists()


def test_cli_score_prints_report_and_macro_f1(tmp_path, labels_csv, capsys):
    from longtail.cli import main

    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dog\n3,eel\n4,fox\n5,cat\n")
    assert main(["score", str(sub), str(labels_csv)]) == 0
    out = capsys.readouterr().out
    assert "macro avg" in out and "macro-F1 1.0000" in out


def test_cli_score_names_the_problem_in_one_line(tmp_path, labels_csv, capsys):
    from longtail.cli import main

    sub = write(tmp_path / "sub.csv", "id,label\n1,cat\n2,dog\n3,eel\n5,cat\n")
    assert main(["score", str(sub), str(labels_csv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longtail score: error: submission") and "'4'" in err and "\n" not in err


def test_a_utf16_submission_is_a_one_line_error(tmp_path, labels_csv, capsys):
    from longtail.cli import main

    sub = tmp_path / "sub.csv"
    sub.write_text("id,label\n1,cat\n2,dog\n3,eel\n4,fox\n5,cat\n", encoding="utf-16")  # Excel's "Unicode text"
    assert main(["score", str(sub), str(labels_csv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"longtail score: error: submission CSV {sub} is not UTF-8 text (it is UTF-16 text); save it as UTF-8 (CSV UTF-8)"
    sub.write_bytes("id,label\n1,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 14 is not UTF-8\)"):
        score(sub, labels_csv)
