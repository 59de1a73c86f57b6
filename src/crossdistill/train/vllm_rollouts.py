"""On-policy rollouts on a vLLM server (``onpolicy.backend: vllm``): the student's samples come from a server that
serves the student, refreshed with the student's current weights before each on-policy step.

vLLM 0.32 reloads a running engine's weights in place from a directory (``reload_weights(weights_path=...)``, a
worker method that runs on CPU and GPU alike); over HTTP it is reached through the development endpoint
``POST /collective_rpc``, which the server exposes when started with ``VLLM_SERVER_DEV_MODE=1``. A refresh is:

1. the student (LoRA merged) written to ``onpolicy.server.weights_dir`` (safetensors, the server must read it);
2. ``/collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}``;
3. ``/reset_prefix_cache`` (cached keys/values of the old weights must not be reused).

Sampling sends one request per prompt (the rendered prompt ids, kept exactly) with ``max_tokens``, the sampling
temperature, top-p, top-k and a seed per prompt derived from the step's rollout seed, so a resumed run draws what an
uninterrupted one draws. The completion's ids (the EOS included when sampled) come back with ``return_token_ids``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crossdistill.teacher.server import ServerClient, ServerError, ServerRequestError, ServerTokenMismatch


def prompt_seed(seed: int, i: int) -> int:
    """The sampling seed of prompt ``i`` of a micro-batch whose rollout seed is ``seed`` (int64 range)."""
    digest = hashlib.sha256(f"crossdistill-vllm-rollout:{seed}:{i}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 62) - 1)


class VLLMRollouts:
    """Samples the student's completions on a vLLM server; :meth:`sync` refreshes its weights."""

    def __init__(self, settings: Any, tokenizer: Any, output_dir: str | Path):
        self.client = ServerClient(settings, where="onpolicy.server")
        self.tokenizer = tokenizer
        self.weights_dir = Path(settings.weights_dir or Path(output_dir) / "rollout_weights").resolve()
        self.synced_step: int | None = None
        self.stats = {"syncs": 0, "sync_seconds": 0.0, "sample_seconds": 0.0, "tokens": 0}
        self._pool: ThreadPoolExecutor | None = None

    def check(self) -> None:
        """Before any weights load: the server answers, serves the model, tokenizes like the student's tokenizer, and
        has its development endpoints on (``/server_info``; without them no refresh is possible)."""
        self.client.check(self.tokenizer, k=1)
        try:
            self.client._call("GET", "/server_info", None)
        except ServerRequestError:
            raise ServerRequestError(
                f"onpolicy.server.url={self.client.settings.url!r} has no development endpoints, so the student's "
                "weights cannot be refreshed there: restart the server with VLLM_SERVER_DEV_MODE=1 in its "
                "environment (docs/server.md), or use onpolicy.backend=hf") from None

    def sync(self, model: Any, step: int) -> None:
        """Write the student's weights and have the server reload them, once per optimizer step."""
        if self.synced_step == step:
            return
        t0 = time.perf_counter()
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(model, "merge_and_unload"):  # PEFT: the server serves plain weights
            import copy

            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(self.weights_dir, safe_serialization=True)
        self.client._call("POST", "/collective_rpc",
                          {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}})
        self.client._call("POST", "/reset_prefix_cache", None)
        self.synced_step = step
        self.stats["syncs"] += 1
        self.stats["sync_seconds"] += time.perf_counter() - t0

    def _sample_one(self, prompt: list[int], cfg: Any, seed: int | None) -> tuple[list[int], bool]:
        body = {"model": self.client.model, "prompt": [int(i) for i in prompt], "max_tokens": cfg.max_new_tokens,
                "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k, "return_token_ids": True,
                "skip_special_tokens": False}
        if seed is not None:
            body["seed"] = seed
        out = self.client._call("POST", "/v1/completions", body)
        try:
            choice = out["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError("onpolicy.server answered /v1/completions without choices") from None
        echoed = choice.get("prompt_token_ids")
        if echoed is not None and list(echoed) != body["prompt"]:
            raise ServerTokenMismatch("onpolicy.server sampled after other prompt tokens than the ones sent: serve "
                                      "the student's model (its tokenizer) with a large enough --max-model-len")
        ids = [int(i) for i in choice.get("token_ids") or []]
        eos = self.tokenizer.eos_token_id
        ended = bool(ids) and choice.get("finish_reason") == "stop" and ids[-1] == eos
        return ids, ended

    def sample(self, prompts: Sequence[list[int]], cfg: Any, seed: int | None = None
               ) -> list[tuple[list[int], bool]]:
        """One completion per prompt: ``[(ids, ended_with_eos)]``, the EOS (when sampled) the last id."""
        t0 = time.perf_counter()
        seeds = [None if seed is None else prompt_seed(seed, i) for i in range(len(prompts))]
        n = self.client.settings.concurrency
        if n > 1 and len(prompts) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="crossdistill-rollouts")
            out = list(self._pool.map(lambda a: self._sample_one(*a), [(p, cfg, s) for p, s in zip(prompts, seeds)]))
        else:
            out = [self._sample_one(p, cfg, s) for p, s in zip(prompts, seeds)]
        self.stats["sample_seconds"] += time.perf_counter() - t0
        self.stats["tokens"] += sum(len(ids) for ids, _ in out)
        return out
