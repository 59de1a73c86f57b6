"""The teacher side of a cross-tokenizer step does not grow with the prompt: its head runs on the completion's
target rows only, never on the prompt (most of a chat sequence).

Each measurement runs in a fresh process: the peak resident memory (``VmHWM``) is reset right before
``MethodRunner.context`` and read right after, so the number is that step's own high-water mark. The teacher has a
262,144-row head (Gemma-3's vocabulary size, padded beyond its tiny tokenizer) and a tiny body, so its logits are
what dominates memory. The dense control (positional ULD reads every teacher position) shows the measurement can
fail: there the peak grows with the prompt.
Run: python -m pytest tests/train/test_teacher_memory.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, re, sys
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from crossdistill.config import DistillConfig
from crossdistill.methods import get_method
from crossdistill.testing.tiny import save_tokenizer
from crossdistill.train.trainer import MethodRunner

tok_dir, prompt, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
tok = AutoTokenizer.from_pretrained(save_tokenizer("bpe", tok_dir))


def model(seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=262144, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval()


student, teacher = model(0), model(1)
cfg = DistillConfig()
cfg.loss.name = "uld"
cfg.loss.params = {"variant": variant}
runner = MethodRunner(get_method("uld"), cfg, teacher, tok, tok)
completion = 32


def batch(p):
    g = torch.Generator().manual_seed(p)
    ids = torch.randint(5, len(tok), (1, p + completion), generator=g)
    labels = ids.clone()
    labels[:, :p] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1))


with torch.no_grad():
    runner.context(student, batch(8))  # warm-up: code paths, allocator
    inputs = batch(prompt)
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current resident size
    before = status("VmRSS")
    ctx = runner.context(student, inputs)
    peak = status("VmHWM")
print(json.dumps({"peak_kb": peak - before}))
"""


def step_peak_kb(tmp_path, prompt: int, variant: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"tok-{prompt}-{variant}"), str(prompt),
                           variant], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_kb"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-memory reset")
def test_teacher_side_peak_does_not_grow_with_the_prompt(tmp_path):
    rows = {p: step_peak_kb(tmp_path, p, "aligned") for p in (64, 1024)}
    dense = {p: step_peak_kb(tmp_path, p, "positional") for p in (64, 1024)}
    print(f"teacher-side step peak (KB): target rows {rows}, every position {dense}")
    # the measurement sees the logits: the dense path holds [1, T, 262144] fp32 (~1.1 GB at T = 1,056)
    assert dense[1024] > 3 * dense[64] and dense[1024] > 500_000, dense
    assert rows[1024] <= 1.2 * rows[64], (rows, dense)
    assert rows[1024] < dense[1024] / 10, (rows, dense)
