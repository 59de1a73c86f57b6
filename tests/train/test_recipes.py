"""Every shipped recipe is a valid config; the tiny recipes pass the --dry-run checks (config, tokenizers, data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crossdistill.config import load_config
from crossdistill.train.cli import main as train_main
from crossdistill.train.tiny_assets import build

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_recipe_is_valid(recipe):
    cfg = load_config(recipe, validate_paths=False)
    assert cfg.train.output_dir


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_accelerate_configs(name):
    data = yaml.safe_load((RECIPES / "accelerate" / f"{name}.yaml").read_text())
    assert data["distributed_type"] == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}[name]


@pytest.mark.parametrize("recipe", ["tiny.yaml", "tiny_gold.yaml"])
def test_tiny_recipe_dry_run(tmp_path, recipe, capsys):
    paths = build(tmp_path / "tiny", n_examples=16)
    cfg = yaml.safe_load((RECIPES / recipe).read_text())
    student = str(cfg["student"]["model"]).replace("../outputs/tiny", str(tmp_path / "tiny"))  # recipe-relative
    over = [f"student.model={student}",
            f"teacher.model={paths['teacher']}", f"data.train={paths['data']}",
            f"train.output_dir={tmp_path / 'out'}"]
    assert train_main([str(RECIPES / recipe), *over, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ok: mode=on_policy" in out and "train=14 examples" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
