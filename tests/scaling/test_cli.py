"""``crossdistill scaling ...``: every subcommand, text and --json output, and clear errors on bad input.

Run: python -m pytest tests/scaling/test_cli.py -q
"""

import json

import numpy as np
import pytest

from crossdistill.cli import main as top_main
from crossdistill.scaling import supervised_loss
from crossdistill.scaling.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_text_and_json(capsys):
    code, out, _ = run(capsys, "predict", "--student-params", "1B", "--student-tokens", "20B", "--teacher-loss", "2.2")
    assert code == 0 and "2.31695" in out and "2.37469" in out
    code, out, _ = run(capsys, "predict", "--student-params", "1e9", "--student-tokens", "2e10",
                       "--teacher-params", "7B", "--teacher-tokens", "1T", "--json")
    data = json.loads(out)
    assert data["teacher_loss"] == pytest.approx(supervised_loss(7e9, 1e12))
    assert data["student_loss"] < data["supervised_student_loss"]


def test_dispatch_from_top_level_cli(capsys):
    assert top_main(["scaling", "predict", "--student-params", "1B", "--student-tokens", "20B", "--json"]) == 0
    assert "teacher_optimal_loss" in json.loads(capsys.readouterr().out)


def test_plan_and_should_i_distill(capsys):
    code, out, _ = run(capsys, "plan", "--compute", "1e22", "--student-params", "1B", "--scenario", "teacher-inference")
    assert code == 0 and "teacher tokens D_T" in out and "supervised alternative" in out
    code, out, _ = run(capsys, "should-i-distill", "--compute", "1e21", "--student-params", "1B", "--json")
    data = json.loads(out)
    assert data["winner"] == "supervised" and data["distillation"]["scenario"] == "teacher-pretraining-inference"
    code, out, _ = run(capsys, "should-i-distill", "--compute", "1e20", "--student-params", "1B",
                       "--scenario", "best-case")
    assert code == 0 and out.strip().splitlines()[-1].startswith("DISTILL:")


def test_fit_csv_writes_coefficients_usable_by_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 40))
    D = N * np.exp(rng.uniform(np.log(2), np.log(2000), 40))
    rows = "\n".join(f"{n},{d},{supervised_loss(n, d)}" for n, d in zip(N, D))
    (tmp_path / "runs.csv").write_text("N,D,L\n" + rows + "\n")
    coef = tmp_path / "coef.json"
    code, out, err = run(capsys, "fit", str(tmp_path / "runs.csv"), "--law", "supervised", "--bootstrap", "0",
                         "--top-m", "4", "--output", str(coef), "--plot", str(tmp_path / "fit.png"))
    assert code == 0, err
    assert "supervised law: 40 runs fitted" in out
    assert json.loads(coef.read_text())["supervised"]["alpha"] == pytest.approx(0.408, rel=1e-3)
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run(capsys, "predict", "--student-params", "1e9", "--student-tokens", "2e10",
                       "--coefficients", str(coef), "--json")
    assert json.loads(out)["supervised_student_loss"] == pytest.approx(2.37469, abs=1e-3)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["predict", "--student-params=-1B", "--student-tokens", "20B"], "must be a positive"),
        (["predict", "--student-params", "1B", "--student-tokens", "0"], "must be a positive"),
        (["predict", "--student-params", "1B", "--student-tokens", "20B", "--teacher-loss", "nan"], "positive finite"),
        (["predict", "--student-params", "abc", "--student-tokens", "20B"], "not a number"),
    ],
)
def test_bad_arguments_exit_2_with_message(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_bad_files_exit_2_with_message(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    code, _, err = run(capsys, "fit", str(tmp_path / "empty.jsonl"))
    assert code == 2 and "empty" in err and "Traceback" not in err
    (tmp_path / "nan.jsonl").write_text(
        '{"student_non_embedding_params": 1e8, "student_tokens": 2e9, "teacher_loss": 2.5, "student_loss": NaN}\n')
    code, _, err = run(capsys, "fit", str(tmp_path / "nan.jsonl"))
    assert code == 2 and "nan.jsonl:1" in err and "NaN" in err
    code, _, err = run(capsys, "predict", "--student-params", "1B", "--student-tokens", "20B",
                       "--teacher-params", "7B")
    assert code == 2 and "--teacher-tokens" in err
    code, _, err = run(capsys, "should-i-distill", "--compute", "1e21", "--student-params", "1B",
                       "--teacher-loss", "2.3")
    assert code == 2 and "--teacher-params" in err
