"""The demo's markdown report and plots (training CE curves, held-out bits per byte per method)."""

from __future__ import annotations

import math
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


def accuracy_se(r: Any) -> float | None:
    """Standard error of a task accuracy over ``r.scored`` examples (binomial: sqrt(p (1 - p) / n))."""
    if r.accuracy is None or not r.scored:
        return None
    return math.sqrt(r.accuracy * (1 - r.accuracy) / r.scored)


def plot_accuracy(results: dict[str, Any], path: Path, highlight: str | None = None) -> Path | None:
    """Held-out task accuracy of every model, with one standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in results.items() if r.accuracy is not None]
    if not names:
        return None
    values = [results[n].accuracy for n in names]
    errors = [accuracy_se(results[n]) or 0.0 for n in names]
    colors = ["#999999" if n in ("untrained", "teacher") else "#cc6677" if n == highlight else "#4477aa"
              for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, values, yerr=errors, capsize=4, color=colors)
    for b, v in zip(bars, values):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("held-out task accuracy (± 1 s.e.)")
    ax.set_title("Task accuracy per model (greedy answers)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lead_table(results: dict[str, Any], highlight: str | None = None, markdown: bool = False) -> str:
    """What a user looks at first: task accuracy ± one standard error, bits per byte, agreement, per model."""
    head = ["model", "accuracy", "± s.e.", "bits/byte", "agreement", ""]
    rows = []
    for n, r in results.items():
        se = accuracy_se(r)
        rows.append([n, "—" if r.accuracy is None else f"{r.accuracy:.3f}", "" if se is None else f"{se:.3f}",
                     f"{r.bpb:.4f}", "—" if r.agreement is None else f"{r.agreement:.3f}",
                     "recommended" if n == highlight else ""])
    if markdown:
        fmt = [[f"**{c}**" if row[0] == highlight and c else c for c in row] for row in rows]
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in fmt])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _side_by_side(results: dict[str, Any], names: list[str], k: int = 3) -> list[str]:
    rows = [n for n in names if n in results and results[n].samples]
    if not rows:
        return []
    first = results[rows[0]].samples
    lines = ["## Held-out answers side by side", "", "| question (answer) | " + " | ".join(rows) + " |",
             "|---|" + "---|" * len(rows)]
    for i in range(min(k, len(first))):
        cells = [f"{first[i]['prompt'][:90]} (**{first[i]['answer']}**)"]
        for n in rows:
            smp = results[n].samples[i] if i < len(results[n].samples) else None
            text = "" if smp is None else smp["output"][:140].replace("|", "/").replace("\n", " ")
            cells.append(("✅ " if smp and smp["correct"] else "❌ ") + text if smp else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(out: Path, summary: dict[str, Any], results: dict[str, Any], runs: dict[str, Any],
                 descriptions: dict[str, str], highlight: str | None = None,
                 why: str = "") -> Path:
    """``report.md`` + ``loss_curves.png`` + ``bpb.png`` + ``accuracy.png`` under ``out``; returns the report path.

    ``highlight``: the recommended method (its row is bold, its plot bar coloured), with ``why`` it is recommended.
    """
    from crossdistill.evaluation import format_table

    curves = plot_loss_curves(runs, out / "loss_curves.png")
    plot_bpb(results, out / "bpb.png")
    acc_plot = plot_accuracy(results, out / "accuracy.png", highlight)
    b = summary["budget"]
    se = {n: {"± s.e.": f"{accuracy_se(r):.3f}"} for n, r in results.items() if accuracy_se(r) is not None}
    if highlight in results:
        se.setdefault(highlight, {})["recommended"] = "**yes**"
    lines = [
        "# crossdistill demo report", "",
        f"Teacher: `{summary['teacher']}`. Student: `{summary['student']}` ({summary.get('student_desc', '')}).",
        f"Budget: {b['n_train']} training prompts x {b['epochs']} epochs, batch {b['batch_size']}, lr "
        f"{b['learning_rate']}; {b['n_eval']} held-out examples; seed {summary['seed']}. Total wall time "
        f"{summary['total_seconds']:.0f} s.", "",
        "## Held-out results", "",
        "accuracy: greedy answers scored against the integer answer (± one binomial standard error). bits/byte: NLL "
        "of the completion (its end-of-turn token included) / (ln 2 x UTF-8 bytes) — comparable across tokenizers. "
        "CE: nats per token of each model's own tokenization. agreement: fraction of aligned token groups where the "
        "greedy next tokens of student and teacher agree.", "",
        lead_table(results, highlight, markdown=True), "",
        "All metrics:", "", format_table(results, markdown=True, extra=se), "",
    ]
    ce = results.get("ce")
    if ce is not None:
        lines += ["## Against the CE-only student", ""]
        for name, r in results.items():
            if name in ("ce", "teacher", "untrained"):
                continue
            delta = r.bpb - ce.bpb
            acc = ""
            if r.accuracy is not None and ce.accuracy is not None:
                err = math.hypot(accuracy_se(r) or 0.0, accuracy_se(ce) or 0.0)
                acc = (f"accuracy {r.accuracy:.3f} vs {ce.accuracy:.3f} ({r.accuracy - ce.accuracy:+.3f}, "
                       f"{(r.accuracy - ce.accuracy) / err:+.1f} s.e. of the difference); " if err else "")
            mark = "**" if name == highlight else ""
            lines.append(f"- {mark}{name}{mark}: {acc}bits/byte {r.bpb:.4f} vs {ce.bpb:.4f} ({delta:+.4f})")
        lines.append("")
    if highlight in results:
        lines += ["## Recommended: " + highlight, "", why or descriptions.get(highlight, ""), ""]
        hl = results["hard_label"] if "hard_label" in results else None
        if hl is not None and hl.accuracy is not None and results[highlight].accuracy is not None:
            r = results[highlight]
            lines += [f"Against CE on the teacher's text (`hard_label`): accuracy {r.accuracy:.3f} vs "
                      f"{hl.accuracy:.3f} ({r.accuracy - hl.accuracy:+.3f}), bits/byte {r.bpb:.4f} vs {hl.bpb:.4f} "
                      f"({r.bpb - hl.bpb:+.4f}).", ""]
    lines += _side_by_side(results, ["teacher", "ce", highlight] if highlight else ["teacher", "ce"])
    lines += ["## Methods", ""] + [f"- **{n}**: {descriptions.get(n, '')}" for n in results] + [""]
    lines += ["## Plots", ""]
    if acc_plot is not None:
        lines += ["![task accuracy](accuracy.png)", ""]
    lines += ["![held-out bpb](bpb.png)", ""]
    if curves is not None:
        lines += ["![training CE](loss_curves.png)", ""]
    lines += ["## Time per stage (seconds)", ""]
    lines += [f"- {k}: {v}" for k, v in summary.get("stage_seconds", {}).items()] + [""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
