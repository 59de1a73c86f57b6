"""Teacher-assistant recommendation (``crossdistill scaling assistant``): the capacity-gap U-shape on the paper's own
coefficients, when an assistant helps and which one, the command's text and JSON, and its errors.

Run: python -m pytest tests/scaling/test_assistant.py -q
"""

import json

import numpy as np
import pytest

from crossdistill.scaling import PAPER, optimal_teacher_loss, student_loss, supervised_loss
from crossdistill.scaling.assistant import ASSUMPTIONS, Candidate, recommend_assistant
from crossdistill.scaling.cli import main

N_S, D_S = 1e9, 2e10  # the paper-preset student of docs/scaling.md (L_T* = 1.7227)


def test_u_shape_of_student_loss_in_teacher_loss_with_the_paper_preset():
    """As the teacher gets stronger (its loss falls from 3.0 to 1.3), the student's predicted loss through it first
    falls, then rises: the capacity gap. The bottom is at the law's L_T*, and past it a stronger teacher is worse."""
    losses = np.round(np.linspace(3.0, 1.3, 35), 6)  # weak -> strong
    advice = recommend_assistant(1.3, N_S, D_S, [Candidate(f"L{lt}", 1e10, loss=float(lt)) for lt in losses], PAPER)
    by_teacher = {o.loss: o.student_loss for o in advice.options}
    curve = [by_teacher[float(lt)] for lt in losses]
    bottom = int(np.argmin(curve))
    assert 0 < bottom < len(curve) - 1  # an interior minimum: neither the weakest nor the strongest teacher
    assert all(np.diff(curve[: bottom + 1]) < 0)  # falls while the teacher gets stronger ...
    assert all(np.diff(curve[bottom:]) > 0)  # ... then rises
    lt_opt, ls_opt = optimal_teacher_loss(N_S, D_S, PAPER)
    assert abs(losses[bottom] - lt_opt) <= 0.05 + 1e-9  # the grid's bottom is the grid point next to L_T*
    assert lt_opt == pytest.approx(1.7227, abs=1e-4) and advice.optimal_teacher_loss == lt_opt
    assert min(curve) >= ls_opt - 1e-12
    # the weakest teacher's student just matches it (L_T -> inf limit), the strongest one's is worse than at L_T*
    assert curve[0] == pytest.approx(3.0, abs=1e-6)
    assert curve[-1] > curve[bottom] + 0.1


def test_an_assistant_helps_a_student_of_a_too_strong_teacher_and_the_best_one_is_chosen():
    cands = [Candidate("near-optimal", 3e9, loss=1.75), Candidate("weak", 5e8, loss=2.6),
             Candidate("as-strong", 7e9, loss=1.4), Candidate("distilled", 7e9, tokens=1e12)]
    a = recommend_assistant(1.4, N_S, D_S, cands)
    assert a.teacher_too_strong and a.direct_loss == pytest.approx(student_loss(N_S, D_S, 1.4))
    assert a.best is not None and a.best.name == "near-optimal"
    assert [o.student_loss for o in a.options] == sorted(o.student_loss for o in a.options)
    weak = next(o for o in a.options if o.name == "weak")
    assert weak.gain < 0  # too weak an assistant is worse than the strong teacher itself
    same = next(o for o in a.options if o.name == "as-strong")
    assert same.gain == pytest.approx(0.0, abs=1e-12)
    d = next(o for o in a.options if o.name == "distilled")  # L_A predicted as the teacher distilled into it
    assert d.loss == pytest.approx(student_loss(7e9, 1e12, 1.4)) and d.loss_source.startswith("distilled")
    assert d.flops_assistant_training is not None and d.flops_assistant_training > 0
    assert a.supervised_loss == pytest.approx(supervised_loss(N_S, D_S))


def test_no_assistant_helps_at_the_bottom_of_the_u():
    lt_opt, _ = optimal_teacher_loss(N_S, D_S)
    a = recommend_assistant(lt_opt, N_S, D_S, [Candidate(str(x), 3e9, loss=x) for x in (1.6, 1.9, 2.2)])
    assert a.best is None and not a.teacher_too_strong
    assert all(o.gain < 0 for o in a.options)


def test_command_text_and_json(capsys):
    argv = ["assistant", "--teacher-loss", "1.4", "--student-params", "1B", "--student-tokens", "20B",
            "--assistant", "A=3B:1.75", "--assistant", "7B@1T"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "USE ASSISTANT A" in out and "capacity gap" in out and "assumptions:" in out
    assert "pretraining-style distillation" in out and "setup-specific" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["best"] == "A" and data["teacher_too_strong"] is True
    assert data["assumptions"] == list(ASSUMPTIONS)
    assert {o["name"] for o in data["options"]} == {"A", "7B@1T"}
    # the teacher by size and tokens (Eq. 1), no assistant worth it
    assert main(["assistant", "--teacher-params", "1.6B", "--teacher-tokens", "50B", "--student-params", "1B",
                 "--student-tokens", "20B", "--assistant", "500M:2.6"]) == 0
    out = capsys.readouterr().out
    assert "DISTILL DIRECTLY" in out and "Eq. 1 from N_T" in out


@pytest.mark.parametrize(("argv", "match"), [
    (["--teacher-loss", "1.4", "--assistant", "3B"], "give SIZE:LOSS"),
    (["--teacher-loss", "1.4", "--assistant", "3B:nan"], "a loss must be a positive finite number"),
    (["--assistant", "3B:2"], "give the teacher"),
    (["--teacher-loss", "1.4", "--teacher-params", "1B", "--teacher-tokens", "1T"], "not both"),
    (["--teacher-loss", "1.4", "--assistant", "x=3B:2", "--assistant", "x=2B:2"], "names must be distinct"),
])
def test_command_errors(capsys, argv, match):
    base = ["assistant", "--student-params", "1B", "--student-tokens", "20B"]
    try:
        code = main([*base, *argv])
    except SystemExit as exc:  # argparse refuses a malformed value itself
        code = exc.code
    assert code == 2
    assert match in capsys.readouterr().err
