"""On-policy rollouts on a vLLM server (``onpolicy.backend: vllm``): the student's samples come from a server that
serves the student, refreshed with the student's current weights before each on-policy step.

vLLM 0.32 reloads a running engine's weights in place from a directory (``reload_weights(weights_path=...)``, a
worker method that runs on CPU and GPU alike); over HTTP it is reached through the development endpoint
``POST /collective_rpc``, which the server exposes when started with ``VLLM_SERVER_DEV_MODE=1``. A refresh is:

1. the student (LoRA merged) written to ``onpolicy.server.weights_dir`` (safetensors, the server must read it);
2. ``/collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}``;
3. ``/reset_prefix_cache`` (cached keys/values of the old weights must not be reused);
4. on the first refresh, a check that the server's log-probs of a probe text are the trainer's.

vLLM 0.32's in-place reload does not update a TIED output head (``tie_word_embeddings``): it reloads the input
embedding and puts the old head back (its log says "ParallelLMHead: Failed to load weights"). A student with tied
embeddings is therefore served from an untied copy (:func:`export_untied`, ``python -m
crossdistill.train.vllm_rollouts STUDENT_DIR OUT_DIR``), and every refresh writes the head explicitly; the check in
step 4 refuses a server started from the tied original.

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
        if hasattr(model, "merge_and_unload"):  # PEFT: the server serves plain weights
            import copy

            model = copy.deepcopy(model).merge_and_unload()
        write_untied(model, self.weights_dir)
        self.client._call("POST", "/collective_rpc",
                          {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}})
        self.client._call("POST", "/reset_prefix_cache", None)
        if self.synced_step is None:
            self.verify(model)
        self.synced_step = step
        self.stats["syncs"] += 1
        self.stats["sync_seconds"] += time.perf_counter() - t0

    def verify(self, model: Any, tolerance: float = 0.05) -> float:
        """The server's log-probs of a probe text against ``model``'s; raises :class:`ServerError` when they differ
        by more than ``tolerance`` (a stale head, another architecture). Returns the largest difference."""
        import torch

        from crossdistill.data.render import PROBE_TEXT

        ids = [int(i) for i in self.tokenizer(PROBE_TEXT)["input_ids"]][:64]
        scored = self.client.score_one(ids, 1)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                dev = next(model.parameters()).device
                z = model(input_ids=torch.tensor([ids], device=dev)).logits[0, :-1].float()
        finally:
            model.train(was_training)
        local = z[:, : len(self.tokenizer)].log_softmax(-1).gather(1, torch.tensor(ids[1:], device=dev)[:, None])
        gap = float((local.squeeze(1).cpu() - scored.target_logprobs).abs().max())
        if gap > tolerance:
            tied = bool(getattr(model.config, "tie_word_embeddings", False))
            why = (" The student ties its input and output embeddings, and vLLM 0.32's in-place reload does not "
                   "update a tied head: start the server from an untied copy (python -m "
                   "crossdistill.train.vllm_rollouts STUDENT_DIR OUT_DIR, then --model OUT_DIR)." if tied else
                   " Serve the student's own model (the same architecture and dtype).")
            raise ServerError(f"onpolicy.server.url={self.client.settings.url!r} did not take the student's weights: "
                              f"after a refresh its log-probs differ from the trainer's by {gap:.3g}.{why}")
        return gap

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


def untied_state_dict(model: Any) -> dict[str, Any]:
    """The model's tensors with the output head written out (cloned) even when it is tied to the embedding."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    head = model.get_output_embeddings()
    if head is not None:
        name = next((k for k in state if k.endswith("lm_head.weight")), "lm_head.weight")
        state[name] = head.weight.detach().clone().contiguous()
    seen: dict[int, str] = {}
    for k, v in list(state.items()):  # safetensors refuses tensors that share memory
        ptr = v.data_ptr()
        if ptr in seen:
            state[k] = v.clone()
        seen.setdefault(ptr, k)
    return state


def write_untied(model: Any, directory: str | Path) -> Path:
    """Write ``model`` as an untied Hugging Face directory (``config.json`` with ``tie_word_embeddings: false`` and
    ``model.safetensors`` holding the head), the form a vLLM server reloads in place."""
    import copy

    from safetensors.torch import save_file

    from crossdistill.io import write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = False
    if hasattr(config, "get_text_config"):
        config.get_text_config().tie_word_embeddings = False
    write_text(directory / "config.json", config.to_json_string())
    tmp = directory / ".model.safetensors.tmp"
    save_file(untied_state_dict(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / "model.safetensors")
    return directory


def export_untied(student_dir: str | Path, out_dir: str | Path) -> Path:
    """An untied copy of a saved student (weights, config, tokenizer) to start a rollout server from."""
    import shutil

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student_dir)
    out = write_untied(model, out_dir)
    for f in Path(student_dir).iterdir():  # tokenizer and generation files
        if f.is_file() and f.name not in ("config.json", "model.safetensors") and not f.name.endswith(".safetensors"):
            shutil.copy2(f, out / f.name)
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        print("usage: python -m crossdistill.train.vllm_rollouts STUDENT_DIR OUT_DIR  (an untied copy to serve)")
        raise SystemExit(2)
    print(export_untied(sys.argv[1], sys.argv[2]))
