"""Rebuild benchmarks/RESULTS.md from the per-topic result files in benchmarks/results/.

Each benchmark script writes its own `benchmarks/results/<topic>.md` (with the command that produced it); this
script only concatenates them under one index so the numbers live in one place.

Run: python benchmarks/merge_results.py
"""

from __future__ import annotations

from pathlib import Path

ORDER = ["losses", "cross_tokenizer", "cross_tokenizer_methods", "train_throughput", "real_pair_step", "cache",
         "server", "quality_pretrained", "quality", "quality_xtok_methods", "demo", "scaling_fit"]


def main() -> None:
    here = Path(__file__).parent
    files = {p.stem: p for p in sorted((here / "results").glob("*.md"))}
    names = [n for n in ORDER if n in files] + [n for n in files if n not in ORDER]
    parts = ["# Benchmark results", "",
             "Every number below was measured on this project's 2-core CPU development machine (no GPU), unless a "
             "section says otherwise; each section names the command that produced it. Rebuilt by "
             "`python benchmarks/merge_results.py` from `benchmarks/results/*.md`.", "",
             *[f"- [{n}](#{n.replace('_', '-')})" for n in names], ""]
    for n in names:
        body = files[n].read_text(encoding="utf-8").strip()
        parts += [f'<a id="{n.replace("_", "-")}"></a>', "", body.replace("\n# ", "\n## "), ""]
    (here / "RESULTS.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
