"""``crossdistill train RECIPE [key=value ...] [--resume | --overwrite] [--dry-run]``.

Works the same under ``accelerate launch [--config_file recipes/accelerate/ddp.yaml] -m crossdistill train ...``:
accelerate sets the process environment, ``transformers.Trainer`` picks it up.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossdistill train", description="Distill (or fine-tune) a student from a "
                                "YAML recipe. Every config field can be overridden with dotted key=value.")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.temperature=2.0 train.max_steps=100")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in "
                   "train.output_dir (it must come from the same config; a finished run is reported, not retrained)")
    p.add_argument("--overwrite", action="store_true", help="delete the previous run in train.output_dir first "
                   "(without this, a non-empty train.output_dir is refused)")
    p.add_argument("--dry-run", action="store_true", help="validate the config, load tokenizers and render the "
                   "data, then stop (no weights are loaded)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported after parsing, so `crossdistill train --help` does not wait for torch.
    from crossdistill.config import ConfigError, load_config
    from crossdistill.data.load import DataError
    from crossdistill.io import os_error_message
    from crossdistill.manifest import ManifestMismatchError
    from crossdistill.teacher.reader import CacheError
    from crossdistill.teacher.server import ServerError

    cfg = None
    try:
        cfg = load_config(args.recipe, args.overrides)
        if cfg.chain is not None:
            return _chain(cfg, args)
        from crossdistill.train.run import prepare, run_training

        prepared = prepare(cfg, progress=cfg.train.progress_bar)
        if args.dry_run:
            print(f"ok: mode={cfg.mode} loss={cfg.loss.name} train={len(prepared.train)} examples "
                  f"eval={len(prepared.eval) if prepared.eval else 0} separate_teacher={prepared.separate_teacher}")
            return 0
        record = run_training(cfg, resume=args.resume, prepared=prepared, overwrite=args.overwrite)
    except (ConfigError, DataError, ManifestMismatchError) as err:  # the last: teacher.cache made from other data
        print(f"crossdistill train: error: {err}", file=sys.stderr)
        return 2
    except (ServerError, CacheError) as err:  # a served teacher refused or stopped answering, a cache shard damaged
        print(f"crossdistill train: error: {err}", file=sys.stderr)  # mid-run (the message: how to repair, resume)
        return 1
    except Exception as err:  # a full disk, a permission fault: say which, with the path and the free space
        message = os_error_message(err, cfg.train.output_dir if cfg is not None else None)
        if message is None:
            raise
        print(f"crossdistill train: error: {message}" + (" (`--resume` continues from the last complete checkpoint)"
                                                         if cfg is not None and cfg.chain is None else ""),
              file=sys.stderr)
        return 1
    print(f"done: student saved to {cfg.train.output_dir}; student_loss={record['student_loss']} "
          f"student_bpb={record['student_bpb']}")
    return 0


def _chain(cfg, args) -> int:
    """A recipe with ``chain:``: every stage, in order (``--dry-run``: the stages' plan, with stage 1's data)."""
    from crossdistill.config import chain_stages
    from crossdistill.train.chain import run_chain

    if args.dry_run:
        stages = chain_stages(cfg)
        from crossdistill.train.run import prepare

        first = prepare(stages[0], progress=False)  # later stages' teachers do not exist before stage 1 trains
        for i, st in enumerate(stages):
            teacher = (st.teacher.model or st.teacher.cache) if st.teacher is not None else None
            print(f"stage {i + 1}/{len(stages)}: mode={st.mode} loss={st.loss.name} teacher={teacher} "
                  f"student={st.student.model} output_dir={st.train.output_dir}")
        print(f"ok: chain of {len(stages)} stages; stage 1 train={len(first.train)} examples")
        return 0
    records = run_chain(cfg, resume=args.resume, overwrite=args.overwrite)
    for r in records:
        print(f"done: {r['output_dir']}; student_loss={r.get('student_loss')} student_bpb={r.get('student_bpb')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
