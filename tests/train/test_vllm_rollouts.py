"""On-policy rollouts on a REAL vLLM server (``onpolicy.backend: vllm``): the server serves the student, the trainer
refreshes it with the student's current weights before each on-policy step (``reload_weights`` through
``/collective_rpc``, ``VLLM_SERVER_DEV_MODE=1``), and the student trains on the server's samples.

One server for the module (~1-2 min to start on 2 cores). Run: python -m pytest tests/train/test_vllm_rollouts.py
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from crossdistill.config import ConfigError, load_config
from crossdistill.train.run import prepare, run_training


@pytest.fixture(scope="module")
def served_student(tokenizer_paths, tiny_dir):
    """A Mistral-style student with the SentencePiece-style tokenizer that a vLLM CPU server loads (head size 32)."""
    from crossdistill.testing.tiny import save_model

    return save_model("mistral", tokenizer_paths["unigram"], tiny_dir / "student_unigram_served", hidden=64,
                      heads=2, seed=3)


@pytest.fixture(scope="module")
def student_server(served_student, tmp_path_factory):
    from crossdistill.testing.vllm_server import VLLMServer, vllm_python

    if vllm_python() is None:
        reason = "no vLLM environment (.venv-vllm): run `bash scripts/setup.sh dev` to create it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from crossdistill.train.vllm_rollouts import export_untied

    # The student ties its embeddings, whose head vLLM's in-place reload does not update: served from an untied copy.
    work = tmp_path_factory.mktemp("student-server")
    untied = export_untied(served_student, work / "untied")
    server = VLLMServer(untied, served_name="student", env={"VLLM_SERVER_DEV_MODE": "1"}, log=work / "server.log")
    server.start(timeout=600)
    yield server
    server.stop()


def overrides(served_student, model_paths, chat_data, server, out, *extra):
    return [f"student.model={served_student}", f"teacher.model={model_paths['teacher_bpe']}",
            f"data.train={chat_data}", "data.max_length=64", "loss.name=uld", "loss.weights={}",
            "loss.params={top_k: 8}", "onpolicy.lmbda=1.0", "onpolicy.max_new_tokens=12", "onpolicy.backend=vllm",
            # ULD trains nothing on the student's own samples by default; these tests need steps that move it
            "onpolicy.ce_on_samples=true",
            f"onpolicy.server.url={server.url}", "onpolicy.server.model=student", "train.max_steps=2",
            "train.per_device_batch_size=4", "train.report_to=[]", "train.progress_bar=false",
            f"train.output_dir={out}", "train.learning_rate=5e-3", "train.logging_steps=1", *extra]


def server_logprobs(server, ids: list[int]) -> torch.Tensor:
    import urllib.request

    body = json.dumps({"model": "student", "prompt": ids, "max_tokens": 1, "prompt_logprobs": 1,
                       "return_token_ids": True}).encode()
    req = urllib.request.Request(server.url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        entries = json.loads(r.read())["choices"][0]["prompt_logprobs"]
    return torch.tensor([entries[j][str(ids[j])]["logprob"] for j in range(1, len(ids))])


def test_student_trains_on_vllm_rollouts_refreshed_every_step(served_student, model_paths, chat_data, student_server,
                                                               tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    cfg = load_config(None, overrides(served_student, model_paths, chat_data, student_server, out))
    p = prepare(cfg, progress=False)
    record = run_training(cfg, prepared=p)
    assert record["steps"] == 2
    history = json.load(open(out / "trainer_state.json"))["log_history"]
    steps = [h for h in history if "loss" in h and "on_policy_fraction" in h]
    assert all(h["on_policy_fraction"] == 1 and torch.isfinite(torch.tensor(h["loss"])) for h in steps)
    stats = p.rollout_server.stats
    assert stats["syncs"] == 2 and stats["tokens"] > 0  # refreshed before each on-policy step
    assert (out / "rollout_weights" / "model.safetensors").is_file()

    # The refresh puts the trainer's weights into the running engine: its log-probs become the trained student's.
    trained = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = p.student_tok("What is 12 plus 30? The answer is 42.")["input_ids"]
    with torch.no_grad():
        ref = trained(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    ref = ref.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    before = server_logprobs(student_server, ids)  # the weights of step 1 (the last on-policy step's start)
    assert (before - ref).abs().max() > 1e-4
    p.rollout_server.sync(trained, step=-1)
    after = server_logprobs(student_server, ids)
    assert (after - ref).abs().max() < 1e-4


def test_vllm_backend_without_its_server_is_refused(served_student, model_paths, chat_data,
                                                                     tmp_path):
    with pytest.raises(ConfigError, match=r"onpolicy.backend='vllm' needs onpolicy.server"):
        load_config(None, [f"student.model={served_student}", f"teacher.model={model_paths['teacher_bpe']}",
                           f"data.train={chat_data}", "loss.name=uld", "loss.params={top_k: 8}",
                           "onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=8", "onpolicy.backend=vllm"])
    with pytest.raises(ConfigError, match=r"onpolicy.server.url='http://127.0.0.1:1' is set but onpolicy.backend="):
        load_config(None, [f"student.model={served_student}", f"teacher.model={model_paths['teacher_bpe']}",
                           f"data.train={chat_data}", "loss.name=uld", "loss.params={top_k: 8}",
                           "onpolicy.server.url=http://127.0.0.1:1"])


def test_untied_export_keeps_the_model(model_paths, tmp_path):
    """A tied student written untied (what a rollout server reloads) computes exactly the same logits."""
    from transformers import AutoModelForCausalLM

    from crossdistill.train.vllm_rollouts import export_untied

    src = model_paths["student_unigram"]  # Mistral-style, tied embeddings
    tied = AutoModelForCausalLM.from_pretrained(src).eval()
    assert tied.config.tie_word_embeddings
    out = export_untied(src, tmp_path / "untied")
    untied = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not untied.config.tie_word_embeddings
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[5, 7, 9, 11, 13]])
    with torch.no_grad():
        assert torch.equal(tied(ids).logits, untied(ids).logits)
    assert (out / "tokenizer.json").is_file()
