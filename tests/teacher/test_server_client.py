"""The served-teacher client against a scripted stand-in HTTP server on 127.0.0.1 (no vLLM needed): the
conversion of ``prompt_logprobs`` into a sparse teacher signal, and every fault — unreachable, 4xx, 5xx, timeouts,
dropped connections, tokenization mismatches — with its message, its retries and backoff, and the API key kept out
of every message. Config validation of ``teacher.server`` too.

Run: python -m pytest tests/teacher/test_server_client.py -q
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from crossdistill.config import ConfigError, TeacherServerConfig, load_config
from crossdistill.losses.signal import TeacherSignal
from crossdistill.teacher.server import (
    ServedTeacher,
    ServerClient,
    ServerRequestError,
    ServerTokenMismatch,
    ServerUnavailable,
    parse_prompt_logprobs,
)
from crossdistill.testing.vllm_server import free_port

V = 12  # the stand-in model's vocabulary


def fake_logits(ids: list[int]) -> torch.Tensor:
    """``[n, V]`` deterministic logits of a stand-in model (row j: the distribution of token j + 1)."""
    g = torch.Generator().manual_seed(sum((i + 1) * t for i, t in enumerate(ids)) % 10007)
    return torch.randn(len(ids), V, generator=g, dtype=torch.float64) * 2


def vllm_answer(ids: list[int], k: int) -> dict:
    """What vLLM's /v1/completions returns for ``prompt_logprobs: k`` (top-k by rank, plus the actual token)."""
    logp = fake_logits(ids).log_softmax(-1)
    entries: list = [None]
    for j in range(1, len(ids)):
        row = logp[j - 1]
        order = row.argsort(descending=True).tolist()
        entry = {str(t): {"logprob": float(row[t]), "rank": r + 1, "decoded_token": "x"} for r, t in
                 enumerate(order[:k])}
        actual = ids[j]
        if str(actual) not in entry:
            entry[str(actual)] = {"logprob": float(row[actual]), "rank": order.index(actual) + 1,
                                  "decoded_token": "y"}
        entries.append(entry)
    return {"choices": [{"index": 0, "text": "", "prompt_logprobs": entries, "prompt_token_ids": ids,
                         "token_ids": [0]}]}


class Script:
    """What the stand-in server does with each request: a list of actions taken in order, then ``"ok"``."""

    def __init__(self):
        self.actions: list = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            return self.actions.pop(0) if self.actions else "ok"


@pytest.fixture
def fake_server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, payload: dict) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            script.requests.append({"path": self.path, "headers": dict(self.headers)})
            self._send(200, {"data": [{"id": "stand-in", "max_model_len": 64}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            action = script.next()
            if action == "drop":  # close the connection without an answer
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if isinstance(action, tuple) and action[0] == "sleep":
                import time

                time.sleep(action[1])
                action = "ok"
            if isinstance(action, tuple):
                self._send(action[0], {"error": {"message": action[1], "code": action[0]}})
                return
            prompt = body["prompt"]
            ids = prompt if isinstance(prompt, list) else [1 + (ord(c) % (V - 1)) for c in prompt]
            answer = vllm_answer(ids, body["prompt_logprobs"])
            if action == "other_ids":
                answer["choices"][0]["prompt_token_ids"] = [*ids[:-1], (ids[-1] + 1) % V]
            self._send(200, answer)

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that timed out and left: expected here

    httpd = Quiet(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield script
    httpd.shutdown()
    httpd.server_close()


class CharTokenizer:
    """A stand-in tokenizer with the stand-in server's tokenization (one id per character)."""

    def __init__(self, shift: int = 0):
        self.shift = shift

    def __call__(self, text: str) -> dict:
        return {"input_ids": [1 + ((ord(c) + self.shift) % (V - 1)) for c in text]}

    def __len__(self) -> int:
        return V


def settings(url: str, **kw) -> TeacherServerConfig:
    base = dict(url=url, model="stand-in", top_k=4, timeout=5.0, retries=2, backoff=0.0, concurrency=2)
    return TeacherServerConfig(**{**base, **kw})


def test_prompt_logprobs_become_the_exact_sparse_signal():
    ids = [3, 7, 1, 9, 4, 4, 2]
    k = 4
    scored = parse_prompt_logprobs(vllm_answer(ids, k)["choices"][0]["prompt_logprobs"], ids, k)
    z = fake_logits(ids)[:-1]
    ref = TeacherSignal.top_k(z, k)
    logp = z.log_softmax(-1)
    assert torch.equal(scored.ids, ref.ids)
    assert torch.allclose(scored.logprobs, ref.logprobs.float(), atol=1e-6)
    # tail = log(1 - sum of the top-k probabilities), the actual token's exact log-prob even outside the top-k
    assert torch.allclose(scored.tail_logmass, ref.tail_logmass.float(), atol=1e-5)
    actual = logp.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    assert torch.allclose(scored.target_logprobs, actual.float(), atol=1e-6)
    outside = [j for j in range(len(ids) - 1) if ids[j + 1] not in scored.ids[j].tolist()]
    assert outside, "the check needs an actual token outside the top-k"


def test_score_and_signal_rows(fake_server):
    client = ServerClient(settings(fake_server.url))
    teacher = ServedTeacher(client, CharTokenizer(), k=4, policy="tail_bucket")
    input_ids = torch.tensor([[3, 7, 1, 9, 4, 0, 0], [5, 2, 8, 6, 1, 3, 2]])
    attention = (torch.arange(7)[None, :] < torch.tensor([[5], [7]])).long()
    labels = input_ids.masked_fill(attention == 0, -100)
    labels[:, :2] = -100  # the prompt
    from crossdistill.positions import shift_targets

    targets, mask = shift_targets(labels)
    sig = teacher.signal({"input_ids": input_ids, "attention_mask": attention, "labels": labels}, targets, mask)
    assert sig.num_positions == int(mask.sum()) and sig.k == 4 and sig.policy == "tail_bucket"
    # the rows of example 1 are its rows 1..5 (predicting tokens 2..6)
    ids1 = input_ids[1].tolist()
    ref = TeacherSignal.top_k(fake_logits(ids1)[:-1], 4)
    n0 = int(mask[0].sum())
    assert torch.equal(sig.ids[n0:], ref.ids[1:])
    assert all(r["body"]["max_tokens"] == 1 and r["body"]["return_token_ids"] for r in fake_server.requests)


def test_unreachable_server_is_retried_with_backoff_then_names_the_fix():
    slept = []
    client = ServerClient(settings(f"http://127.0.0.1:{free_port()}", retries=3, backoff=0.5), sleep=slept.append)
    with pytest.raises(ServerUnavailable) as err:
        client.score_one([1, 2, 3], 4)
    assert slept == [0.5, 1.0, 2.0]  # exponential backoff
    msg = str(err.value)
    assert "teacher.server.url='http://127.0.0.1:" in msg and "4 attempt(s)" in msg
    assert "ConnectionRefusedError" in msg and "--resume" in msg and "teacher.server.retries" in msg


@pytest.mark.parametrize("fault", [(503, "loading"), (500, "EngineCore encountered an issue"), "drop",
                                   ("sleep", 1.5)])
def test_transient_faults_are_retried(fake_server, fault):
    fake_server.actions = [fault]
    client = ServerClient(settings(fake_server.url, timeout=0.5, retries=2))
    scored = client.score_one([1, 2, 3, 4], 4)
    assert scored.ids.shape == (3, 4)
    assert client.retried == 1


def test_persistent_5xx_gives_up_with_the_server_message(fake_server):
    fake_server.actions = [(500, "EngineCore encountered an issue")] * 3
    client = ServerClient(settings(fake_server.url, retries=2))
    with pytest.raises(ServerUnavailable, match=r"after 3 attempt\(s\) \(last: HTTP 500: EngineCore encountered"):
        client.score_one([1, 2, 3], 4)


def test_timeouts_name_the_timeout_setting(fake_server):
    fake_server.actions = [("sleep", 1.0)] * 2
    client = ServerClient(settings(fake_server.url, timeout=0.3, retries=1))
    with pytest.raises(ServerUnavailable, match=r"no answer within teacher.server.timeout=0.3 s"):
        client.score_one([1, 2, 3], 4)


@pytest.mark.parametrize("status, message, expected", [
    (400, "Requested prompt logprobs of 100, which is greater than max allowed: 64",
     r"top_k \(or cache_build.k\) = 4 exceeds the server's --max-logprobs=64; lower it to <= 64, or restart the "
     r"server with --max-logprobs 4"),
    (404, "The model `stand-in` does not exist. Valid aliases: other.",
     r"teacher.server.model='stand-in' is not served by .* set teacher.server.model"),
    (400, "This model's maximum context length is 64 tokens. However, your prompt contains 80 input tokens",
     r"longer than the server's --max-model-len .* lower data.max_length"),
])
def test_4xx_is_not_retried_and_names_the_setting(fake_server, status, message, expected):
    fake_server.actions = [(status, message)]
    client = ServerClient(settings(fake_server.url, retries=3))
    with pytest.raises(ServerRequestError, match=expected):
        client.score_one([1, 2, 3], 4)
    assert len(fake_server.requests) == 1 and client.retried == 0


def test_out_of_vocabulary_is_a_tokenizer_mismatch(fake_server):
    fake_server.actions = [(400, "Token id 4000 is out of vocabulary")]
    with pytest.raises(ServerTokenMismatch, match=r"not the one teacher.tokenizer / teacher.model names"):
        ServerClient(settings(fake_server.url)).score_one([1, 4000], 4)


def test_server_that_scores_other_ids_is_refused(fake_server):
    fake_server.actions = ["other_ids"]
    with pytest.raises(ServerTokenMismatch, match=r"scored other tokens than the 4 sent .*first difference at "
                                                  r"position 3"):
        ServerClient(settings(fake_server.url)).score_one([1, 2, 3, 4], 4)


def test_check_finds_the_model_and_refuses_another_tokenizer(fake_server):
    client = ServerClient(settings(fake_server.url, model=""))
    found = client.check(CharTokenizer(), k=4, probe_text="Hello there")
    assert found == {"model": "stand-in", "max_model_len": 64}
    with pytest.raises(ServerRequestError, match=r"teacher.server.model='other' is not served by .*\['stand-in'\]"):
        ServerClient(settings(fake_server.url, model="other")).check(CharTokenizer(), k=4)
    with pytest.raises(ServerTokenMismatch, match=r"tokenizes a probe text differently from the local teacher"):
        ServerClient(settings(fake_server.url)).check(CharTokenizer(shift=1), k=4, probe_text="Hello there")
    with pytest.raises(ServerRequestError, match=r"reach 80 tokens but the server's --max-model-len is 64"):
        ServerClient(settings(fake_server.url)).check(CharTokenizer(), k=4, longest=80, probe_text="Hi")


def test_api_key_is_sent_but_never_shown(fake_server, monkeypatch):
    secret = "sk-very-secret-123"
    monkeypatch.setenv("TEST_VLLM_KEY", secret)
    fake_server.actions = ["ok", (401, f"Unauthorized: bad key {secret}")]
    client = ServerClient(settings(fake_server.url, api_key_env="TEST_VLLM_KEY", retries=0))
    client.score_one([1, 2, 3], 4)
    assert fake_server.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    with pytest.raises(ServerRequestError) as err:
        client.score_one([1, 2, 3], 4)
    assert secret not in str(err.value) and "***" in str(err.value)
    assert "TEST_VLLM_KEY" in str(err.value) and secret not in repr(client.settings)


def test_concurrent_scoring_keeps_the_order(fake_server):
    client = ServerClient(settings(fake_server.url, concurrency=4))
    seqs = [[1 + (i * j) % (V - 1) for j in range(3 + i)] for i in range(9)]
    scored = client.score(seqs, 4)
    for s, ids in zip(scored, seqs):
        assert torch.equal(s.ids, TeacherSignal.top_k(fake_logits(ids)[:-1], 4).ids)
    client.close()


# ------------------------------------------------------------------------------------------ config validation
@pytest.fixture
def server_overrides(model_paths, chat_data, tmp_path):
    def make(*extra):
        return [f"student.model={model_paths['student_unigram']}", f"teacher.model={model_paths['teacher_bpe']}",
                "teacher.server.url=http://127.0.0.1:8000", "teacher.server.top_k=8", f"data.train={chat_data}",
                "loss.name=uld", "loss.params={top_k: 8}",
                f"train.output_dir={tmp_path / 'out'}", *extra]

    return make


def test_server_config_admits_on_policy(server_overrides, model_paths):
    cfg = load_config(None, server_overrides("onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=8", "teacher.model=",
                                             f"teacher.tokenizer={model_paths['teacher_bpe']}"))
    assert cfg.teacher.server.url == "http://127.0.0.1:8000" and cfg.teacher.server.top_k == 8


@pytest.mark.parametrize("extra, message", [
    (["loss.name=cdm", "loss.weights={}", "loss.params={}"],
     r"a served teacher returns top-k log-probs, which the methods \["),
    (["loss.name=ce", "loss.weights={}", "loss.params={}"], r"uses no teacher"),
    (["onpolicy.seq_kd=true", "onpolicy.max_new_tokens=8"], r"onpolicy.seq_kd=true: SeqKD samples completions"),
    (["teacher.cache=/tmp"], r"and teacher.cache='/tmp' are both set"),
    (["teacher.server.url=localhost:8000"], r"teacher.server.url='localhost:8000' is not an http\(s\) URL"),
    (["teacher.server.top_k=0"], r"teacher.server.top_k=0 must be >= 1"),
    (["teacher.server.timeout=0"], r"teacher.server.timeout=0.0 must be > 0"),
    (["teacher.server.concurrency=0"], r"teacher.server.concurrency=0 must be >= 1"),
    (["teacher.server.api_key_env=NOT_SET_ANYWHERE_123"], r"that environment variable is not set; export"),
    (["teacher.server.api_key_env=sk-123"], r"is not an environment variable name"),
    (["loss.params={variant: positional, top_k: 8}"], r"teacher.server with loss.params.variant='positional'"),
    (["loss.params={top_k: 16}"], r"loss.params.top_k=16 is more than the 8 teacher log-probs"),
    (["teacher.model="], r"neither teacher.tokenizer nor teacher.model is"),
])
def test_bad_server_settings_are_refused_before_any_weights(server_overrides, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, server_overrides(*extra))


def test_cache_build_from_a_server_needs_topk_at_temperature_1(tmp_path, chat_data, model_paths):
    from crossdistill.config import cache_build_from_dict

    base = dict(teacher=str(model_paths["teacher_bpe"]), data=str(chat_data), output=str(tmp_path / "c"),
                server={"url": "http://127.0.0.1:8000"})
    with pytest.raises(ConfigError, match=r"support='sampled' with a served teacher"):
        cache_build_from_dict({**base, "support": "sampled"})
    with pytest.raises(ConfigError, match=r"temperature=2.0 with a served teacher"):
        cache_build_from_dict({**base, "temperature": 2.0})
    assert cache_build_from_dict(base).server.url == "http://127.0.0.1:8000"
