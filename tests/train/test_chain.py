"""Teacher-assistant chains (``chain:``): three tiny models with three tokenizers (byte-level BPE teacher ->
SentencePiece-style assistant -> WordPiece student), end to end, resumed mid-chain, and the chain's validation."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from crossdistill.config import ConfigError, chain_stages, load_config
from crossdistill.testing.faults import Crash, CrashAt
from crossdistill.train.chain import run_chain
from crossdistill.train.run import last_complete_checkpoint, run_training


def chain_recipe(path, model_paths, chat_data, out_dir, **stage2):
    recipe = {
        "teacher": {"model": str(model_paths["teacher_bpe"])},
        "data": {"train": str(chat_data), "eval_fraction": 0.1},
        "train": {"output_dir": str(out_dir), "max_steps": 4, "save_steps": 2, "per_device_batch_size": 4,
                  "learning_rate": 5e-3, "report_to": [], "progress_bar": False},
        "chain": [
            {"name": "assistant", "recipe": {"student": {"model": str(model_paths["student_unigram"])},
                                             "loss": {"name": "uld"}}},
            {"name": "student", "recipe": {"student": {"model": str(model_paths["student_wordpiece"])},
                                           "loss": {"name": "gold_hybrid"}, **stage2}},
        ],
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_stages_are_complete_configs(tmp_path, model_paths, chat_data):
    cfg = load_config(chain_recipe(tmp_path / "r.yaml", model_paths, chat_data, tmp_path / "chain"))
    a, s = chain_stages(cfg)
    assert a.teacher.model == str(model_paths["teacher_bpe"]) and a.student.model == str(model_paths["student_unigram"])
    assert a.train.output_dir == str(tmp_path / "chain" / "assistant") and a.loss.name == "uld"
    # the second stage's teacher is the first stage's student, which does not exist yet
    assert s.teacher.model == a.train.output_dir and s.loss.name == "gold_hybrid"
    assert s.train.output_dir == str(tmp_path / "chain" / "student")
    assert s.train.max_steps == 4 and s.data.train == str(chat_data) and s.chain is None  # the base is shared
    with pytest.raises(ConfigError, match="has a chain: section"):
        run_training(cfg)


def test_dry_run_prints_the_stages(tmp_path, model_paths, chat_data, capsys):
    from crossdistill.train.cli import main

    assert main([str(chain_recipe(tmp_path / "r.yaml", model_paths, chat_data, tmp_path / "chain")), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage 1/2: mode=soft loss=uld" in out and "stage 2/2: mode=soft loss=gold_hybrid" in out
    assert f"teacher={tmp_path / 'chain' / 'assistant'}" in out and "ok: chain of 2 stages" in out
    assert not (tmp_path / "chain").exists()


def test_chain_of_three_tokenizers_runs_and_resumes_mid_chain(tmp_path, model_paths, chat_data):
    full = run_chain(load_config(chain_recipe(tmp_path / "full.yaml", model_paths, chat_data, tmp_path / "full")))
    assert [r["output_dir"] for r in full] == [str(tmp_path / "full" / n) for n in ("assistant", "student")]
    assert full[1]["teacher"] == full[0]["output_dir"]  # the assistant taught the student
    assert all(r["steps"] == 4 and r["teacher_bpb"] is not None for r in full)
    runs = [json.loads(x) for x in open(tmp_path / "full" / "runs.jsonl")]
    assert [r["output_dir"] for r in runs] == [r["output_dir"] for r in full]  # one record per stage, one file
    for name in ("assistant", "student"):
        manifest = json.load(open(tmp_path / "full" / name / "manifest.json"))
        assert manifest["kind"] == "student" and set(manifest["tokenizer_hashes"]) == {"student", "teacher"}
    hashes = [json.load(open(tmp_path / "full" / n / "manifest.json"))["tokenizer_hashes"] for n in ("assistant",
                                                                                                     "student")]
    assert len({hashes[0]["teacher"], hashes[0]["student"], hashes[1]["student"]}) == 3  # three tokenizers
    assert hashes[1]["teacher"] == hashes[0]["student"]

    # killed in the second stage after its checkpoint-2; the resumed chain skips the first and continues the second
    cfg = load_config(chain_recipe(tmp_path / "cut.yaml", model_paths, chat_data, tmp_path / "cut"))
    with pytest.raises(Crash):
        run_chain(cfg, callbacks={"student": [CrashAt(3)]})
    assistant_weights = tmp_path / "cut" / "assistant" / "model.safetensors"
    stamp = assistant_weights.stat().st_mtime_ns
    assert last_complete_checkpoint(tmp_path / "cut" / "student").endswith("checkpoint-2")
    with pytest.raises(ConfigError, match="not empty"):  # without --resume the chain refuses to mix runs
        run_chain(cfg)
    resumed = run_chain(cfg, resume=True)
    assert assistant_weights.stat().st_mtime_ns == stamp  # the finished stage was not retrained
    assert resumed[0]["output_dir"] == str(tmp_path / "cut" / "assistant") and resumed[1]["steps"] == 4
    runs = [json.loads(x) for x in open(tmp_path / "cut" / "runs.jsonl")]
    assert [r["output_dir"].rsplit("/", 1)[1] for r in runs] == ["assistant", "student"]
    a = load_file(tmp_path / "full" / "student" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "student" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6  # the same student as the uninterrupted chain

    # a finished stage trained by another config is refused, naming the field
    edited = chain_recipe(tmp_path / "edited.yaml", model_paths, chat_data, tmp_path / "cut")
    data = yaml.safe_load(edited.read_text())
    data["chain"][0]["recipe"]["loss"]["name"] = "gold_hybrid"
    edited.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"chain stage 'assistant'.*loss.name: 'uld' -> 'gold_hybrid'"):
        run_chain(load_config(edited), resume=True)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d["chain"][1]["recipe"].update(loss={"name": "uldd"}), r"chain\[1\] \(student\): .*uldd"),
    (lambda d: d["chain"][1]["recipe"].update(studnet={}), r"chain\[1\] \(student\): unknown config key 'studnet'"),
    (lambda d: d["chain"][1].update(name="assistant"), r"stage names \['assistant'\] occur more than once"),
    (lambda d: d["chain"][0].update(name="a/b"), r"chain\[0\].name='a/b' is not a usable stage name"),
    (lambda d: d.update(chain=d["chain"][:1]), r"a chain needs at least two"),
    (lambda d: d["chain"][1]["recipe"].update(train={"output_dir": d["train"]["output_dir"] + "/assistant"}),
     r"chain\[1\] \(student\): train.output_dir=.* is another stage's"),
    (lambda d: d["chain"][1]["recipe"].update(student={"model": "/no/such/model"}),
     r"chain\[1\] \(student\): student.model='/no/such/model' does not exist"),
])
def test_bad_chains_fail_before_anything_trains(tmp_path, model_paths, chat_data, edit, match):
    path = chain_recipe(tmp_path / "r.yaml", model_paths, chat_data, tmp_path / "chain")
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=match):
        load_config(path)
    assert not (tmp_path / "chain").exists()
