"""``crossdistill`` command line: dispatch only.

Each subcommand lives in the module that does the work and exposes ``main(argv: list[str]) -> int`` with its own
``argparse`` parser (``prog="crossdistill NAME"``). Modules are imported only when their command runs, so
``crossdistill --help`` stays instant and one broken optional dependency cannot take down every command.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("crossdistill.demo.run", "the whole pipeline on a real small teacher, on a CPU, in minutes"),
    "train": ("crossdistill.train.cli", "distill (or fine-tune) a student from a YAML recipe"),
    "generate": ("crossdistill.generation", "teacher generations -> dataset with manifest (hard labels, SeqKD)"),
    "cache": ("crossdistill.teacher.cache_cli", "teacher top-k distributions -> sharded, verifiable cache"),
    "cache-info": ("crossdistill.teacher.cache_cli", "size, bytes per token, k, teacher and coverage of a cache"),
    "eval": ("crossdistill.evaluation", "bits per byte, cross-entropy, teacher agreement, task accuracy"),
    "align-report": ("crossdistill.alignment_report", "how well two tokenizers line up, before any training"),
    "scaling": ("crossdistill.scaling.cli", "distillation scaling laws: predict | fit | plan | should-i-distill"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: crossdistill COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `crossdistill COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from crossdistill.version import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"crossdistill: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry = getattr(module, "main_" + name.replace("-", "_"), None) or module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
