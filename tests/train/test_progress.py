"""The training progress bar: loss terms in the postfix, not a dict per log.

Run: python -m pytest tests/train/test_progress.py -q
"""

from __future__ import annotations

import pytest

from crossdistill import distill
from crossdistill.train.progress import postfix


def test_postfix_keeps_loss_terms_and_drops_repeats():
    logs = {"loss": 9.78123, "grad_norm": 5.6, "learning_rate": 0.003, "loss_ce": 5.777, "loss_gold": 4.003,
            "loss_off_policy": 9.78, "on_policy_fraction": 0.0, "target_tokens": 1321, "epoch": 0.25}
    assert postfix(logs) == {"loss": "9.781", "lr": "0.003", "ce": "5.777", "gold": "4.003"}
    assert postfix({"loss": 1.0, "on_policy_fraction": 0.5})["on_policy"] == "0.5"


@pytest.mark.parametrize("log_lines", [False, True])
def test_training_logs_go_to_the_bar_unless_log_lines(tmp_path, overrides, capsys, log_lines):
    distill(None, overrides(tmp_path / "out", "train.max_steps=2", "train.logging_steps=1", "train.progress_bar=true",
                            f"train.log_lines={str(log_lines).lower()}", teacher=None))
    captured = capsys.readouterr()
    err = captured.err
    assert "2/2" in err  # the bar ran to the end
    # tqdm.write prints to stdout, the bar itself to stderr; a printed dict is a line of its own in either.
    printed_dicts = [line for line in (captured.out + err).splitlines() if line.lstrip().startswith("{'loss'")]
    assert bool(printed_dicts) == log_lines
    if not log_lines:
        assert "loss=" in err and "ce=" in err  # the postfix shows the total and the CE term
