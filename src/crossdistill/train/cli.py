"""``crossdistill train RECIPE [key=value ...] [--resume] [--dry-run]``.

Works the same under ``accelerate launch [--config_file recipes/accelerate/ddp.yaml] -m crossdistill train ...``:
accelerate sets the process environment, ``transformers.Trainer`` picks it up.
"""

from __future__ import annotations

import argparse
import sys

from crossdistill.config import ConfigError, load_config
from crossdistill.data.load import DataError
from crossdistill.manifest import ManifestMismatchError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossdistill train", description="Distill (or fine-tune) a student from a "
                                "YAML recipe. Every config field can be overridden with dotted key=value.")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.temperature=2.0 train.max_steps=100")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in "
                   "train.output_dir")
    p.add_argument("--dry-run", action="store_true", help="validate the config, load tokenizers and render the "
                   "data, then stop (no weights are loaded)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.recipe, args.overrides)
        from crossdistill.train.run import prepare, run_training

        prepared = prepare(cfg, progress=cfg.train.progress_bar)
        if args.dry_run:
            print(f"ok: mode={cfg.mode} loss={cfg.loss.name} train={len(prepared.train)} examples "
                  f"eval={len(prepared.eval) if prepared.eval else 0} separate_teacher={prepared.separate_teacher}")
            return 0
        record = run_training(cfg, resume=args.resume, prepared=prepared)
    except (ConfigError, DataError, ManifestMismatchError) as err:  # the last: teacher.cache made from other data
        print(f"crossdistill train: error: {err}", file=sys.stderr)
        return 2
    print(f"done: student saved to {cfg.train.output_dir}; student_loss={record['student_loss']} "
          f"student_bpb={record['student_bpb']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
