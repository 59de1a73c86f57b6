"""The demo's markdown report and plots (training CE curves, held-out bits per byte per method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossdistill.io import write_text

TRAIN_KEYS = ("loss_ce", "loss")  # the CE term is comparable across methods; the total objective is not


def _curve(history: list[dict[str, Any]]) -> tuple[list[int], list[float], str]:
    for key in TRAIN_KEYS:
        pts = [(h["step"], h[key]) for h in history if key in h and "step" in h]
        if pts:
            return [p[0] for p in pts], [p[1] for p in pts], key
    return [], [], ""


def _smooth(values: list[float], k: int = 5) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-k:]
        out.append(sum(acc) / len(acc))
    return out


def plot_loss_curves(runs: dict[str, Any], path: Path) -> Path | None:
    """Training cross-entropy (nats per student token, 5-step running mean) of every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for name, run in runs.items():
        steps, values, key = _curve(run.log_history)
        if steps:
            ax.plot(steps, _smooth(values), label=f"{name} ({key})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training CE on its own targets (nats/token)")
    ax.set_title("Training cross-entropy per method")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bpb(results: dict[str, Any], path: Path) -> Path:
    """Held-out bits per byte of every model (lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    values = [results[n].bpb for n in names]
    colors = ["#999999" if n in ("untrained", "teacher") else "#4477aa" for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, values, color=colors)
    for b, v in zip(bars, values):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.set_title("Held-out bits per byte per method")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: Path, summary: dict[str, Any], results: dict[str, Any], runs: dict[str, Any],
                 descriptions: dict[str, str]) -> Path:
    """``report.md`` + ``loss_curves.png`` + ``bpb.png`` under ``out``; returns the report path."""
    from crossdistill.evaluation import format_table

    curves = plot_loss_curves(runs, out / "loss_curves.png")
    plot_bpb(results, out / "bpb.png")
    b = summary["budget"]
    lines = [
        "# crossdistill demo report", "",
        f"Teacher: SmolLM2-135M-Instruct (`{summary['teacher']}`). Student: `{summary['student']}` "
        f"({b['student_layers']} layers, hidden {b['student_hidden']}, its own SentencePiece-style BPE tokenizer).",
        f"Budget: {b['n_train']} training prompts x {b['epochs']} epochs, batch {b['batch_size']}, lr "
        f"{b['learning_rate']}; {b['n_eval']} held-out examples; seed {summary['seed']}. Total wall time "
        f"{summary['total_seconds']:.0f} s.", "",
        "## Held-out results", "",
        "bits/byte: NLL of the completion (its end-of-turn token included) / (ln 2 x UTF-8 bytes) — comparable across "
        "tokenizers. CE: nats per token of each model's own tokenization. agreement: fraction of aligned token "
        "groups where the greedy next tokens of student and teacher agree. accuracy: greedy answers scored against "
        "the integer answer.", "",
        format_table(results, markdown=True), "",
    ]
    ce = results.get("ce")
    if ce is not None:
        lines += ["## Against the CE-only student (held-out bits per byte)", ""]
        for name, r in results.items():
            if name in ("ce", "teacher"):
                continue
            delta = r.bpb - ce.bpb
            verdict = "better" if delta < 0 else "worse" if delta > 0 else "equal"
            lines.append(f"- **{name}**: {r.bpb:.4f} vs {ce.bpb:.4f} ({delta:+.4f} bits/byte, {verdict})")
        lines.append("")
    lines += ["## Methods", ""] + [f"- **{n}**: {descriptions.get(n, '')}" for n in results] + [""]
    if curves is not None:
        lines += ["## Plots", "", "![training CE](loss_curves.png)", "", "![held-out bpb](bpb.png)", ""]
    else:
        lines += ["## Plots", "", "![held-out bpb](bpb.png)", ""]
    samples = [(n, s) for n, r in results.items() for s in r.samples[:1]]
    if samples:
        lines += ["## Sample answers (first held-out prompt)", ""]
        for name, s in samples:
            lines.append(f"- **{name}** ({'correct' if s['correct'] else 'wrong'}): {s['output'][:160]!r}")
        lines.append("")
    lines += ["## Time per stage (seconds)", ""]
    lines += [f"- {k}: {v}" for k, v in summary.get("stage_seconds", {}).items()] + [""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
