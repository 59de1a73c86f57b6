"""A teacher behind an OpenAI-compatible vLLM server: the sparse teacher signal without the teacher in-process.

The client renders and tokenizes every example with the teacher's own tokenizer and chat template LOCALLY, sends
the token ids to ``POST /v1/completions`` with ``max_tokens: 1`` and ``prompt_logprobs: k`` (``return_token_ids``
echoes the ids the server scored), and turns each position into what every sparse-teacher objective reads
(:class:`~crossdistill.losses.signal.TeacherSignal`): the top-k ids and log-probs, the exact log-prob of the token
that actually follows (vLLM always adds it to the position's entries, with its rank), and the tail mass
``log(1 − Σ top-k probs)``. Character spans and alignment stay on the client, so the student may use any tokenizer.

Wiring (the trainer does this when ``teacher.server`` is set; see docs/server.md)::

    teacher = ServedTeacher.connect(cfg.teacher.server, teacher_tokenizer, policy="tail_bucket")  # checks first
    targets, mask = shift_targets(teacher_batch["labels"])
    ctx.teacher_signal = teacher.signal(teacher_batch, targets, mask)     # rows in mask.nonzero() order

Requests carry one sequence each and run ``concurrency`` at a time (the server batches what is in flight).
Failures are :class:`ServerError` subclasses whose messages name the setting and the fix. Connection refused or
dropped, timeouts, HTTP 5xx and 429 are retried ``retries`` times with exponential backoff; then
:class:`ServerUnavailable` stops the run, which resumes from its last checkpoint (``--resume``) once the server is
back. An API key is read from the environment variable ``api_key_env`` names and sent only as a bearer header: no
message, log or manifest ever holds it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch

MAX_BACKOFF = 30.0
"""Longest wait between two retries, in seconds."""

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: overload and server-side failures (a restarting server answers 503 or 502)."""


class ServerError(RuntimeError):
    """A served teacher that cannot answer as asked (the message names the setting and the fix)."""


class ServerUnavailable(ServerError):
    """No usable answer after every retry: unreachable, dropped connections, timeouts or HTTP 5xx."""


class ServerRequestError(ServerError):
    """The server refused a request (HTTP 4xx): a setting does not fit the server (k, model name, length, key)."""


class ServerTokenMismatch(ServerError):
    """The server scored other token ids than the ones sent, or tokenizes differently from the local tokenizer."""


@dataclass
class ScoredSequence:
    """The teacher's prompt log-probs of one sequence of n tokens: row j is the distribution of token j + 1 given
    tokens 0..j (the logit-row convention of :func:`crossdistill.positions.shift_targets`)."""

    ids: torch.Tensor
    """int64 ``[n - 1, k]`` top-k ids per row, by decreasing log-prob."""
    logprobs: torch.Tensor
    """float32 ``[n - 1, k]``."""
    tail_logmass: torch.Tensor
    """float32 ``[n - 1]`` log of the mass outside the k ids (``log1mexp(logsumexp(logprobs))``, floored)."""
    target_logprobs: torch.Tensor
    """float32 ``[n - 1]`` exact log-prob of the token that follows (token j + 1)."""


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _max_logprobs(message: str) -> int | None:
    m = re.search(r"greater than max allowed: (\d+)", message)
    return int(m.group(1)) if m else None


class ServerClient:
    """HTTP client of one OpenAI-compatible vLLM endpoint (stdlib only; thread-safe).

    Args:
        settings: a :class:`crossdistill.config.TeacherServerConfig`.
        where: the recipe key the settings come from (``teacher.server`` or ``cache_build.server``), for messages.
        sleep: the backoff's sleep (tests pass a recorder).
    """

    def __init__(self, settings: Any, where: str = "teacher.server", sleep: Callable[[float], None] = time.sleep):
        self.settings, self.where, self._sleep = settings, where, sleep
        base = settings.url.rstrip("/")
        self.base = base[: -len("/v1")] if base.endswith("/v1") else base
        self._key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self.model = settings.model
        self.max_model_len: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.retried = 0

    # ---------------------------------------------------------------------------------------------- transport
    def _call(self, method: str, path: str, body: dict | None) -> Any:
        """One request with retries; returns the decoded JSON. Raises the :class:`ServerError` subclasses."""
        s = self.settings
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        url = self.base + path
        failures: list[str] = []
        for attempt in range(s.retries + 1):
            if attempt:
                with self._lock:
                    self.retried += 1
                self._sleep(min(MAX_BACKOFF, s.backoff * 2 ** (attempt - 1)))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=s.timeout) as resp:
                    raw = resp.read()
                with self._lock:
                    self.requests += 1
                return json.loads(raw)
            except urllib.error.HTTPError as err:
                detail = self._error_detail(err)
                if err.code in TRANSIENT_STATUS:
                    failures.append(f"HTTP {err.code}: {detail}")
                    continue
                raise self._refused(err.code, detail, body) from None
            except TimeoutError:
                failures.append(f"no answer within {self.where}.timeout={s.timeout} s")
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, TimeoutError):
                    failures.append(f"no answer within {self.where}.timeout={s.timeout} s")
                else:
                    failures.append(f"{type(reason).__name__}: {reason}")
            except json.JSONDecodeError as err:
                failures.append(f"an unreadable answer ({err})")
        last = _redact(failures[-1], self._key) if failures else "no attempt"
        raise ServerUnavailable(
            f"{self.where}.url={s.url!r} gave no usable answer to {method} {path} after {s.retries + 1} attempt(s) "
            f"(last: {last}). Start or restart the server (docs/server.md has the command), check {self.where}.url, "
            f"or raise {self.where}.retries / {self.where}.timeout for a slow or busy server. A training run stopped "
            "by this resumes from its last checkpoint with `crossdistill train RECIPE --resume`; an interrupted "
            "`crossdistill cache` resumes when rerun.")

    @staticmethod
    def _error_detail(err: urllib.error.HTTPError) -> str:
        try:
            payload = json.loads(err.read() or b"{}")
        except (json.JSONDecodeError, OSError, http.client.HTTPException):
            return str(err.reason)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error)

    def _refused(self, status: int, detail: str, body: dict | None) -> ServerError:
        """The error of a non-retryable HTTP status, with the setting that fixes it."""
        w, s = self.where, self.settings
        detail = _redact(detail, self._key)
        asked = (body or {}).get("prompt_logprobs")
        if status in (401, 403):
            how = (f"the key in ${s.api_key_env} (named by {w}.api_key_env) is not the server's --api-key"
                   if s.api_key_env else f"set {w}.api_key_env to the NAME of an environment variable that holds it")
            return ServerRequestError(f"{w}.url={s.url!r} refused the request (HTTP {status}: {detail}): the server "
                                      f"wants an API key; {how}")
        if status == 404 and "does not exist" in detail:
            return ServerRequestError(f"{w}.model={self.model!r} is not served by {s.url} ({detail}); set {w}.model "
                                      "to the server's --served-model-name (GET /v1/models lists them)")
        if status == 404:
            return ServerRequestError(f"{w}.url={s.url!r}: HTTP 404 ({detail}); the URL is not an OpenAI-compatible "
                                      "server's base: give e.g. http://HOST:PORT (the client adds /v1/...)")
        limit = _max_logprobs(detail)
        if limit is not None:
            return ServerRequestError(f"{w}.top_k (or cache_build.k) = {asked} exceeds the server's --max-logprobs="
                                      f"{limit}; lower it to <= {limit}, or restart the server with --max-logprobs "
                                      f"{asked}")
        if "maximum context length" in detail or "max_model_len" in detail:
            return ServerRequestError(f"a teacher sequence is longer than the server's --max-model-len ({detail}); "
                                      "lower data.max_length (and onpolicy.max_new_tokens), or restart the server "
                                      "with a larger --max-model-len")
        if "out of vocabulary" in detail:
            return ServerTokenMismatch(f"{w}.url={s.url!r} does not know a token id the local teacher tokenizer "
                                       f"produced ({detail}): the served model is not the one teacher.tokenizer / "
                                       "teacher.model names; point them at the served model's tokenizer, or serve "
                                       "that model")
        return ServerRequestError(f"{w}.url={s.url!r} refused the request (HTTP {status}: {detail}); check "
                                  f"{w}.model and {w}.top_k against the server's settings")

    # ---------------------------------------------------------------------------------------------- endpoints
    def served_models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the served models (``id``, ``max_model_len`` ...)."""
        out = self._call("GET", "/v1/models", None)
        return list(out.get("data", [])) if isinstance(out, dict) else []

    def _completion(self, prompt: list[int] | str, k: int) -> dict[str, Any]:
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k,
                "return_token_ids": True}
        out = self._call("POST", "/v1/completions", body)
        try:
            return out["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.where}.url={self.settings.url!r} answered /v1/completions without choices; is "
                              "it an OpenAI-compatible vLLM server?") from None

    def score_one(self, ids: Sequence[int], k: int) -> ScoredSequence:
        """Prompt log-probs of one token sequence (``len(ids) >= 2``), checked against the ids sent."""
        ids = [int(i) for i in ids]
        choice = self._completion(ids, k)
        echoed = choice.get("prompt_token_ids")
        if echoed is None:
            raise ServerError(f"{self.where}.url={self.settings.url!r} did not echo prompt_token_ids; it needs "
                              "vLLM's `return_token_ids` (vLLM >= 0.10): upgrade the server")
        if list(echoed) != ids:
            first = next((j for j, (a, b) in enumerate(zip(echoed, ids)) if a != b), min(len(echoed), len(ids)))
            raise ServerTokenMismatch(
                f"{self.where}.url={self.settings.url!r} scored other tokens than the {len(ids)} sent (it returned "
                f"{len(echoed)}; first difference at position {first}): the server re-tokenized or truncated the "
                "prompt; serve the model whose tokenizer teacher.tokenizer / teacher.model names, with a "
                "--max-model-len above the longest sequence")
        return parse_prompt_logprobs(choice.get("prompt_logprobs"), ids, k, where=self.where)

    def score(self, sequences: Sequence[Sequence[int]], k: int) -> list[ScoredSequence]:
        """:meth:`score_one` of every sequence, ``concurrency`` requests in flight, results in order."""
        if len(sequences) <= 1 or self.settings.concurrency <= 1:
            return [self.score_one(s, k) for s in sequences]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.settings.concurrency,
                                            thread_name_prefix="crossdistill-teacher-server")
        futures = [self._pool.submit(self.score_one, s, k) for s in sequences]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ---------------------------------------------------------------------------------------------- checks
    def check(self, tokenizer: Any, k: int, longest: int | None = None, probe_text: str | None = None
              ) -> dict[str, Any]:
        """Before any weights load: the server answers, serves ``model`` (or exactly one model, which is then
        used), accepts ``k`` log-probs, tokenizes a probe text exactly as ``tokenizer`` does, and fits sequences of
        ``longest`` tokens. Returns what it found (``model``, ``max_model_len``)."""
        from crossdistill.data.render import PROBE_TEXT

        w, url = self.where, self.settings.url
        models = self.served_models()
        names = [str(m.get("id")) for m in models]
        if not self.model:
            if len(names) != 1:
                raise ServerRequestError(f"{w}.model is empty and {url} serves {len(names)} models {names}; set "
                                         f"{w}.model to one of them")
            self.model = names[0]
        elif self.model not in names:
            raise ServerRequestError(f"{w}.model={self.model!r} is not served by {url} (it serves {names}); set "
                                     f"{w}.model to one of them, or start the server with --served-model-name "
                                     f"{self.model}")
        card = models[names.index(self.model)]
        self.max_model_len = card.get("max_model_len")
        text = probe_text or PROBE_TEXT
        local = [int(i) for i in tokenizer(text)["input_ids"]]
        choice = self._completion(text, k)  # the server tokenizes the text itself; also checks k
        remote = [int(i) for i in choice.get("prompt_token_ids") or []]
        if remote != local:
            first = next((j for j, (a, b) in enumerate(zip(remote, local)) if a != b), min(len(remote), len(local)))
            raise ServerTokenMismatch(
                f"the served model {self.model!r} at {url} tokenizes a probe text differently from the local teacher "
                f"tokenizer ({len(remote)} vs {len(local)} tokens, first difference at token {first}): they are not "
                "the same tokenizer, so its log-probs would belong to other tokens. Point teacher.tokenizer (or "
                "teacher.model) at the served model's tokenizer, or serve the model that tokenizer belongs to")
        vocab = len(tokenizer)
        top = parse_prompt_logprobs(choice.get("prompt_logprobs"), remote, k, where=w, vocab_size=None)
        if top.ids.numel() and int(top.ids.max()) >= vocab + 1024:
            raise ServerTokenMismatch(f"the served model {self.model!r} at {url} predicts token id "
                                      f"{int(top.ids.max())}, far beyond the local teacher tokenizer's {vocab} "
                                      "tokens: point teacher.tokenizer at the served model's tokenizer")
        if longest is not None and self.max_model_len is not None and longest + 1 > int(self.max_model_len):
            raise ServerRequestError(f"teacher sequences reach {longest} tokens but the server's --max-model-len is "
                                     f"{self.max_model_len} (a scoring request needs one more); lower "
                                     "data.max_length, or restart the server with --max-model-len "
                                     f"{longest + 1} or more")
        return {"model": self.model, "max_model_len": self.max_model_len}


def parse_prompt_logprobs(entries: Any, ids: Sequence[int], k: int, where: str = "teacher.server",
                          vocab_size: int | None = None) -> ScoredSequence:
    """vLLM's ``prompt_logprobs`` (``[None, {id: {logprob, rank, ...}}, ...]``, one entry per prompt token) ->
    :class:`ScoredSequence` of the ``len(ids) - 1`` rows.

    Each entry holds the k most likely ids (ranks 1..k) plus, when it is not among them, the actual token with its
    own rank. Ids at or beyond ``vocab_size`` (padding rows of a head wider than the tokenizer) are dropped to the
    tail; a row left with fewer than k ids is filled with unused in-vocabulary ids at log-prob ``LOG_ZERO``.
    """
    from crossdistill.losses.signal import LOG_ZERO, log1mexp

    n = len(ids)
    if not isinstance(entries, list) or len(entries) != n:
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise ServerError(f"{where}: the server returned prompt_logprobs for {got} positions, expected {n}; it needs "
                          "vLLM's prompt_logprobs support (vLLM >= 0.6)")
    rows = max(n - 1, 0)
    out_ids = torch.zeros(rows, k, dtype=torch.long)
    out_lp = torch.full((rows, k), LOG_ZERO, dtype=torch.float32)
    target = torch.zeros(rows, dtype=torch.float32)
    for j in range(rows):
        entry = entries[j + 1]
        actual = int(ids[j + 1])
        if not isinstance(entry, dict) or str(actual) not in entry:
            raise ServerError(f"{where}: the server's prompt_logprobs at position {j + 1} lack the actual token "
                              f"{actual}; it is not a vLLM server, or an unsupported version")
        target[j] = float(entry[str(actual)]["logprob"])
        pairs = []
        for key, val in entry.items():
            tid = int(key)
            rank = val.get("rank")
            if tid == actual and rank is not None and rank > k:
                continue  # the actual token, added beside the top-k
            if vocab_size is not None and tid >= vocab_size:
                continue
            pairs.append((float(val["logprob"]), tid))
        pairs.sort(key=lambda p: (-p[0], p[1]))
        pairs = pairs[:k]
        if len(pairs) < k:
            used = {t for _, t in pairs}
            fill = (t for t in range(vocab_size or (k + len(used) + 1)) if t not in used)
            pairs += [(LOG_ZERO, next(fill)) for _ in range(k - len(pairs))]
        out_lp[j] = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
        out_ids[j] = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    kept = torch.logsumexp(out_lp.double(), dim=-1)
    tail = log1mexp(kept).float().clamp(min=LOG_ZERO)
    return ScoredSequence(out_ids, out_lp, tail, target)


class ServedTeacher:
    """A checked :class:`ServerClient` that answers batches of the trainer's layout, like
    :class:`~crossdistill.teacher.source.CachedTeacher` answers from a cache."""

    def __init__(self, client: ServerClient, tokenizer: Any, k: int, policy: str = "renormalize"):
        self.client, self.tokenizer, self.k, self.policy = client, tokenizer, k, policy
        self.vocab_size = len(tokenizer)
        self.seconds = 0.0  # time spent waiting for the server (benchmarks read it)
        self.positions = 0

    @classmethod
    def connect(cls, settings: Any, tokenizer: Any, policy: str = "renormalize", longest: int | None = None,
                where: str = "teacher.server", k: int | None = None) -> ServedTeacher:
        """Client + :meth:`ServerClient.check` (raises before any weights load)."""
        client = ServerClient(settings, where)
        k = settings.top_k if k is None else k
        if k > len(tokenizer):
            raise ServerRequestError(f"{where}.top_k={k} exceeds the teacher vocabulary ({len(tokenizer)} tokens); "
                                     f"use top_k <= {len(tokenizer)}")
        client.check(tokenizer, k, longest=longest)
        return cls(client, tokenizer, k, policy)

    def describe(self) -> str:
        """What the run records as its teacher (no key, no credentials)."""
        return f"{self.client.settings.url} ({self.client.model})"

    def score(self, sequences: Sequence[Sequence[int]]) -> list[ScoredSequence]:
        start = time.perf_counter()
        scored = self.client.score(sequences, self.k)
        self.seconds += time.perf_counter() - start
        return [replace(s, **_in_vocab(s, self.vocab_size)) for s in scored]

    def signal(self, batch: dict[str, torch.Tensor], targets: torch.Tensor, mask: torch.Tensor) -> Any:
        """Sparse ``TeacherSignal`` at the ``mask.sum()`` target rows of a collated teacher-side batch, in
        row-major ``mask.nonzero()`` order (row j of example b: the distribution of token j + 1).

        ``targets``/``mask``: :func:`~crossdistill.positions.shift_targets` of ``batch["labels"]``; each target is
        checked to be the token the server scored at that row.
        """
        from crossdistill.losses.signal import TeacherSignal

        lengths = batch["attention_mask"].sum(1).tolist()
        seqs = [batch["input_ids"][b, : int(n)].tolist() for b, n in enumerate(lengths)]
        scored = self.score(seqs)
        parts: dict[str, list[torch.Tensor]] = {"ids": [], "lp": [], "tail": [], "target": []}
        for b, s in enumerate(scored):
            rows = mask[b].nonzero().squeeze(-1).cpu()
            if rows.numel() and int(rows.max()) >= s.ids.shape[0]:
                raise ServerError(f"example {b} of the batch has a target row beyond its {s.ids.shape[0] + 1} "
                                  "attended tokens (padding inside the sequence?)")
            if not torch.equal(torch.as_tensor(seqs[b])[rows + 1], targets[b, rows.to(targets.device)].cpu()):
                raise ServerTokenMismatch(f"example {b}: the batch's targets are not the tokens that follow each "
                                          "row of its input ids; the teacher batch is not right-padded labels")
            parts["ids"].append(s.ids[rows])
            parts["lp"].append(s.logprobs[rows])
            parts["tail"].append(s.tail_logmass[rows])
            parts["target"].append(s.target_logprobs[rows])
        self.positions += int(mask.sum())
        return TeacherSignal(ids=torch.cat(parts["ids"]), logprobs=torch.cat(parts["lp"]),
                             tail_logmass=torch.cat(parts["tail"]), policy=self.policy,
                             target_logprobs=torch.cat(parts["target"])).to(mask.device)

    def close(self) -> None:
        self.client.close()


def _in_vocab(s: ScoredSequence, vocab_size: int) -> dict[str, torch.Tensor]:
    """Drop ids beyond the tokenizer (a padded head's rows) into the tail; unchanged when none appear."""
    if not s.ids.numel() or int(s.ids.max()) < vocab_size:
        return {}
    from crossdistill.losses.signal import LOG_ZERO, log1mexp

    bad = s.ids >= vocab_size
    lp = s.logprobs.masked_fill(bad, LOG_ZERO)
    ids = s.ids.clone()
    for j in bad.any(-1).nonzero().squeeze(-1).tolist():
        used = set(ids[j][~bad[j]].tolist())
        free = (t for t in range(vocab_size) if t not in used)
        for c in bad[j].nonzero().squeeze(-1).tolist():
            ids[j, c] = next(free)
    order = lp.argsort(dim=-1, descending=True, stable=True)
    ids, lp = ids.gather(1, order), lp.gather(1, order)
    tail = log1mexp(torch.logsumexp(lp.double(), -1)).float().clamp(min=LOG_ZERO)
    return {"ids": ids, "logprobs": lp, "tail_logmass": tail}


def server_records(teacher: ServedTeacher, rendered: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
    """The cache writer's per-example records (:func:`crossdistill.teacher.forward.teacher_records`'s keys, top-k
    support) from a served teacher, for examples rendered with the teacher's tokenizer and template."""
    from crossdistill.positions import shift_targets

    scored = teacher.score([r.input_ids for r in rendered])
    out = []
    for r, s in zip(rendered, scored):
        labels = torch.tensor([r.labels], dtype=torch.long)
        targets, mask = shift_targets(labels)
        rows = mask[0].nonzero().squeeze(-1)
        comp = (rows + 1 - r.completion_start).tolist()
        out.append({"token_ids": targets[0, rows], "token_logprob": s.target_logprobs[rows],
                    "spans": torch.tensor([r.spans[c] for c in comp], dtype=torch.long).reshape(-1, 2),
                    "support_ids": s.ids[rows], "support_logprobs": s.logprobs[rows],
                    "tail_logmass": s.tail_logmass[rows]})
    return out

