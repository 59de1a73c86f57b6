"""A training progress bar that shows the loss terms in place instead of printing a dict per logging step.

Transformers' ``ProgressCallback`` writes every log dict as a new line under the bar; with a distillation objective
that is a dozen keys every few steps, and the bar scrolls away. :class:`LossBar` keeps one line: the bar, with the
latest total loss and each ``loss_*`` term in its postfix. Evaluation results still get a line of their own (they are
rare and worth keeping on screen). The full log history is unchanged: ``trainer_state.json`` and ``report_to``
receive every value either way; ``train.log_lines: true`` restores the line-per-log behaviour.
"""

from __future__ import annotations

from transformers import ProgressCallback

# Keys that repeat information already in the postfix or in the bar itself.
_SKIP = {"epoch", "total_flos", "target_tokens", "loss_off_policy", "loss_on_policy"}


def postfix(logs: dict) -> dict[str, str]:
    """The compact postfix for one training log: ``loss``, each ``loss_*`` term, ``on_policy`` when non-zero, and the
    learning rate, floats to 4 significant digits; keys ``loss_x`` shown as ``x``."""
    out: dict[str, str] = {}
    for key, value in logs.items():
        if key in _SKIP or not isinstance(value, int | float):
            continue
        if key == "loss" or key.startswith("loss_"):
            out[key.removeprefix("loss_") if key != "loss" else key] = f"{value:.4g}"
        elif key == "on_policy_fraction" and value:
            out["on_policy"] = f"{value:.2g}"
        elif key == "learning_rate":
            out["lr"] = f"{value:.2g}"
    return out


class LossBar(ProgressCallback):
    """``ProgressCallback`` whose training logs go to the bar's postfix; evaluation logs still print a line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if any(key.startswith("eval_") for key in logs):
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items() if k.startswith("eval_")}
            self.training_bar.write(f"step {state.global_step}: {shown}")
        elif "train_runtime" not in logs:  # the end-of-training summary is reported by the caller
            self.training_bar.set_postfix(postfix(logs), refresh=False)
