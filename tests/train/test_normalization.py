"""Normalization (docs/design.md, contract 2): the loss of an optimizer step must not depend on how its global batch
is split."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from crossdistill.config import load_config
from crossdistill.train.run import run_training


class Capture(TrainerCallback):
    """Gradients just before the first optimizer step, and the first logged (unrounded) step loss."""

    def __init__(self):
        self.grads: dict[str, torch.Tensor] = {}
        self.loss: float | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.loss is None and logs and "loss_off_policy" in logs:
            self.loss = logs["loss_off_policy"]


@pytest.mark.parametrize("loss", ["ce", "forward_kl"])
def test_grad_accum_1x8_equals_4x2(tmp_path, overrides, loss):
    caps = []
    for bs, accum in ((8, 1), (2, 4)):
        cap = Capture()
        cfg = load_config(None, overrides(tmp_path / f"{bs}x{accum}" / "out", f"loss.name={loss}",
                                          "train.max_steps=1", f"train.per_device_batch_size={bs}",
                                          f"train.grad_accum={accum}", "train.max_grad_norm=0",
                                          "data.eval_fraction=0", teacher=None if loss == "ce" else "teacher_bpe"))
        run_training(cfg, callbacks=[cap])
        caps.append(cap)
    a, b = caps
    assert a.loss == pytest.approx(b.loss, abs=1e-5)
    assert a.grads.keys() == b.grads.keys() and a.grads
    for name in a.grads:
        torch.testing.assert_close(a.grads[name], b.grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_uneven_micro_batches_use_the_global_count(tmp_path, overrides):
    """Micro-batches with very different target counts: per-micro-batch means would weight them wrongly."""
    import json

    data = tmp_path / "uneven.jsonl"
    rows = []
    for i in range(8):
        answer = "yes." if i % 2 else "The answer is " + " ".join(str(k) for k in range(i + 5)) + "."
        rows.append({"prompt": f"Q{i}: ", "completion": answer})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    caps = []
    for bs, accum in ((8, 1), (1, 8)):
        cap = Capture()
        cfg = load_config(None, overrides(tmp_path / f"{bs}x{accum}" / "out", "train.max_steps=1",
                                          f"train.per_device_batch_size={bs}", f"train.grad_accum={accum}",
                                          "train.max_grad_norm=0", "data.eval_fraction=0", f"data.train={data}",
                                          teacher=None))
        run_training(cfg, callbacks=[cap])
        caps.append(cap)
    assert caps[0].loss == pytest.approx(caps[1].loss, abs=1e-5)
    for name in caps[0].grads:
        torch.testing.assert_close(caps[0].grads[name], caps[1].grads[name], atol=1e-5, rtol=1e-4)
