"""Reading run records (runs.jsonl / CSV) and the errors on bad files.

Run: python -m pytest tests/scaling/test_runs.py -q
"""

import json
import math

import numpy as np
import pytest

from crossdistill.scaling.runs import RunsError, RunTable, load_runs


def _jsonl(tmp_path, rows, name="runs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_from_training(tmp_path):
    rows = [
        {"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": None, "student_loss": 3.1,
         "run_id": "a", "objective": "ce"},
        {"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": 2.5, "student_loss": 3.0,
         "extra": {"ignored": True}},
    ]
    runs = load_runs(_jsonl(tmp_path, rows + [""]))  # blank lines are skipped
    assert len(runs) == 2
    assert math.isnan(runs.L_T[0]) and runs.L_T[1] == 2.5
    assert len(runs.supervised()) == 1 and len(runs.distillation()) == 1


def test_csv_supervised_and_distillation(tmp_path):
    (tmp_path / "s.csv").write_text("N,D,L\n1e8,2e9,3.1\n2e8,4e9,2.9\n")
    (tmp_path / "d.csv").write_text("N_S,D_S,L_T,L_S\n1e8,2e9,2.5,3.0\n1e8,2e9,,3.1\n")
    s = load_runs(tmp_path / "s.csv")
    d = load_runs(tmp_path / "d.csv")
    np.testing.assert_array_equal(s.N, [1e8, 2e8])
    assert d.is_distillation.tolist() == [True, False]


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ('{"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": null, "student_loss": NaN}',
         "student_loss.*NaN"),
        ('{"student_non_embedding_params": -1e8, "student_tokens": 2e9, "teacher_loss": null, "student_loss": 3}',
         "student_non_embedding_params.*positive"),
        ('{"student_non_embedding_params": 1e8, "student_tokens": 2e9, "student_loss": 3}', None),
        ('{"student_non_embedding_params": 1e8, "teacher_loss": 2.0, "student_loss": 3}', "student_tokens.*missing"),
        ('{"student_non_embedding_params": 1e8, "student_tokens": "many", "student_loss": 3}', "not a number"),
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_jsonl(tmp_path, content, match):
    path = tmp_path / "runs.jsonl"
    path.write_text(content)
    if match is None:  # a missing teacher_loss means a supervised run
        assert math.isnan(load_runs(path).L_T[0])
        return
    with pytest.raises(RunsError, match=match):
        load_runs(path)


def test_bad_csv_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RunsError, match="columns"):
        load_runs(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("N,D,L\n1e8,2e9,nan\n")
    with pytest.raises(RunsError, match=r"y.csv:2.*'L' is NaN"):
        load_runs(tmp_path / "y.csv")
    with pytest.raises(RunsError, match="no such file"):
        load_runs(tmp_path / "missing.jsonl")


def test_run_table_validates_arrays():
    with pytest.raises(RunsError, match="L"):
        RunTable.from_arrays([1e8], [1e9], [float("nan")])
    with pytest.raises(RunsError, match="L_T"):
        RunTable.from_arrays([1e8], [1e9], [3.0], [-1.0])


def test_bpb_metric_for_cross_tokenizer_runs(tmp_path):
    rows = [{"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": 2.5, "student_loss": 3.0,
             "teacher_bpb": 0.9, "student_bpb": 1.1}]
    runs = load_runs(_jsonl(tmp_path, rows), metric="bpb")
    assert runs.L_T[0] == 0.9 and runs.L[0] == 1.1
    with pytest.raises(RunsError, match="student_bpb.*missing"):
        load_runs(_jsonl(tmp_path, [{k: v for k, v in rows[0].items() if k != "student_bpb"}], "b.jsonl"), "bpb")
    (tmp_path / "s.csv").write_text("N,D,L\n1e8,2e9,3.1\n")
    with pytest.raises(RunsError, match="bpb"):
        load_runs(tmp_path / "s.csv", metric="bpb")


def test_sft_record_with_evaluated_teacher_is_supervised(tmp_path):
    # `crossdistill train` in sft mode still evaluates the teacher and records its loss; the laws must not read that
    # run as a distillation run.
    rows = [{"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": 2.5, "student_loss": 3.1,
             "mode": "sft"},
            {"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": 2.5, "student_loss": 3.0,
             "mode": "soft"}]
    runs = load_runs(_jsonl(tmp_path, rows))
    assert math.isnan(runs.L_T[0]) and runs.L_T[1] == 2.5
