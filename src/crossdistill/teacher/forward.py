"""Teacher forward pass -> per-example sparse records (top-k or sampled support) for the cache.

Only completion positions are scored: the decoder runs once over the padded batch, the hidden states of target
positions are compacted, and the lm_head runs on chunks of at most ``chunk_rows`` rows, so no ``[B, T, V]`` logits
tensor is ever materialized (docs/design.md, contract 7: memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from crossdistill.data.render import Rendered, collate_rendered
from crossdistill.positions import shift_targets


def load_tokenizer(name: str) -> Any:
    """The teacher's fast tokenizer (``crossdistill.models.load_tokenizer``: GGUF files and Hub ids too)."""
    from crossdistill.config import ModelConfig
    from crossdistill.models import load_tokenizer as _load

    return _load(ModelConfig(model=name), "teacher")


def load_teacher(name: str, dtype: str = "float32", device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` through ``crossdistill.models`` (local directory, Hub id or GGUF), frozen."""
    from crossdistill.config import ModelConfig
    from crossdistill.models import freeze_teacher, load_model

    mc = ModelConfig(model=name, dtype=dtype)
    model = freeze_teacher(load_model(mc, "teacher", device))
    return model, load_tokenizer(name)


def _logit_transform(model: Any):
    """Scaling/soft-capping some architectures apply after the lm_head (identity for most)."""
    cfg = model.config
    scale = getattr(cfg, "logit_scale", None)
    cap = getattr(cfg, "final_logit_softcapping", None)

    def apply(z: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            z = z * scale
        if cap:
            z = torch.tanh(z / cap) * cap
        return z

    return apply


def sampled_support(logp: torch.Tensor, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``k`` ids per row from ``exp(logp)`` with replacement; return k DISTINCT ids and their draw counts.

    Args:
        logp: ``[n, V]`` float32 log-probabilities (V >= k).
    Returns:
        ``ids [n, k]`` int64: the u unique sampled ids (ascending), then the ``k - u`` most probable ids that were
        not drawn (count 0) so every row is a valid sparse support of distinct ids; ``counts [n, k]`` int64 with
        ``counts.sum(-1) == k``.
    """
    n = logp.shape[0]
    if n == 0:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k, dtype=torch.long)
    draws = torch.multinomial(logp.exp(), k, replacement=True, generator=generator)  # [n, k]
    draws, _ = draws.sort(dim=-1)
    first = torch.ones_like(draws, dtype=torch.bool)
    first[:, 1:] = draws[:, 1:] != draws[:, :-1]
    group = first.long().cumsum(-1) - 1  # [n, k] slot of each draw's unique id
    counts = torch.zeros(n, k, dtype=torch.long).scatter_add_(1, group, torch.ones_like(draws))
    unique = draws[:, :1].expand(n, k).clone().scatter_(1, group, draws)
    u = first.sum(-1, keepdim=True)  # [n, 1] unique ids per row
    rest = logp.scatter(1, draws, float("-inf")).topk(k, dim=-1).indices  # best ids that were not drawn
    fill = rest.gather(1, (torch.arange(k)[None, :] - u).clamp(min=0))
    ids = torch.where(torch.arange(k)[None, :] < u, unique, fill)
    return ids, counts


@torch.no_grad()
def teacher_records(model: Any, tokenizer: Any, rendered: Sequence[Rendered], indices: Sequence[int], *, k: int,
                    support: str = "topk", temperature: float = 1.0, seed: int = 0,
                    chunk_rows: int = 1024) -> list[dict[str, torch.Tensor]]:
    """Score the completion tokens of a batch of rendered examples with the teacher.

    Args:
        rendered: examples rendered with the TEACHER's tokenizer and template.
        indices: dataset index of each example (seeds the sampled support, so results do not depend on batching).
        k: entries per token (``min(k, V)`` are kept; the rest of the row is padding).
    Returns:
        one dict per example with, for its n predicted completion tokens: ``token_ids [n]``, ``token_logprob [n]``,
        ``spans [n, 2]``, ``support_ids [n, k]``, ``support_logprobs [n, k]``, ``tail_logmass [n]`` and, for
        ``support="sampled"``, ``sample_counts [n, k]``.
    """
    vocab = len(tokenizer)
    if k > vocab:
        raise ValueError(f"cache_build.k={k} exceeds the teacher vocabulary ({vocab} tokens); use k <= {vocab}")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = collate_rendered(list(rendered), pad_id=pad if pad is not None else 0)
    targets, mask = shift_targets(batch["labels"])  # [B, T]: row j predicts token j + 1
    if mask.any() and int(targets[mask].max()) >= vocab:
        raise ValueError(f"a target id {int(targets[mask].max())} is beyond the teacher vocabulary ({vocab})")
    from crossdistill.models import decoder_of

    hidden = decoder_of(model)(input_ids=batch["input_ids"].to(device),
                              attention_mask=batch["attention_mask"].to(device)).last_hidden_state  # [B, T, H]
    head = model.get_output_embeddings()
    post = _logit_transform(model)
    out: list[dict[str, torch.Tensor]] = []
    for b, r in enumerate(rendered):
        rows = mask[b].nonzero().squeeze(-1)  # [n] logit rows of this example's predicted completion tokens
        comp = (rows + 1 - r.completion_start).tolist()  # completion token index predicted by each row
        h = hidden[b, rows.to(device)]  # [n, H]
        tgt = targets[b, rows].to(device)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(indices[b])) if support == "sampled" else None
        parts: dict[str, list[torch.Tensor]] = {key: [] for key in
                                                ("support_ids", "support_logprobs", "tail_logmass", "token_logprob",
                                                 "sample_counts")}
        for s in range(0, max(len(comp), 1), chunk_rows):
            z = post(head(h[s:s + chunk_rows]).float())[:, :vocab]  # [c, V] real vocabulary only: padded head rows cut
            logp = torch.log_softmax(z / temperature, dim=-1)
            if support == "topk":
                vals, ids = logp.topk(k, dim=-1)  # sorted descending
                keep = ids
            else:
                ids, counts = sampled_support(logp.cpu(), k, gen)
                ids = ids.to(device)
                vals = logp.gather(1, ids)
                keep = ids
                parts["sample_counts"].append(counts)
            tail = logp.scatter(1, keep, float("-inf")).logsumexp(-1)  # exact mass outside the support
            parts["support_ids"].append(ids.cpu())
            parts["support_logprobs"].append(vals.cpu())
            parts["tail_logmass"].append(tail.cpu())
            parts["token_logprob"].append(logp.gather(1, tgt[s:s + chunk_rows, None]).squeeze(1).cpu())
        rec = {key: torch.cat(v) for key, v in parts.items() if v}
        rec["token_ids"] = targets[b, rows].cpu()
        rec["spans"] = torch.tensor([r.spans[c] for c in comp], dtype=torch.long).reshape(-1, 2)
        out.append(rec)
    return out
