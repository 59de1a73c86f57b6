"""The demo's pipeline on tiny models (the real-teacher demo is the `slow` test). Run:
python -m pytest tests/test_demo.py -q          (tiny smoke path, ~30 s)
python -m pytest tests/test_demo.py -q --runslow  (also the real SmolLM2 demo, --quick budget, a few minutes)
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from crossdistill import tasks
from crossdistill.config import ConfigError
from crossdistill.demo.budget import BUDGETS
from crossdistill.demo.methods import CACHED_METHODS, GOLD_PARAMS, METHODS, method_config, run_config
from crossdistill.demo.run import main, run_demo
from crossdistill.demo.student import build_student
from crossdistill.demo.teacher import fine_tune_teacher, teacher_examples

TINY = replace(BUDGETS["quick"], n_train=8, n_eval=4, epochs=1, batch_size=4, gen_tokens=4, eval_tokens=4,
               student_hidden=32, student_layers=1, student_vocab=120, teacher_accuracy=True)


def test_demo_smoke_on_tiny_models(tmp_path, model_paths, capsys):
    out = tmp_path / "demo"
    summary = run_demo(out, TINY, teacher=str(model_paths["teacher_bpe"]), methods=METHODS, progress=False)
    printed = capsys.readouterr().out
    results = summary["results"]
    assert list(results) == ["teacher", "untrained", *METHODS]
    for name, r in results.items():
        assert r["examples"] == TINY.n_eval and math.isfinite(r["bpb"]) and r["bpb"] > 0, name
        assert r["accuracy"] is not None and 0 <= r["accuracy"] <= 1, name
        if name != "teacher":
            assert 0 <= r["agreement"] <= 1, name
    # every held-out example is scored by every model on the same bytes
    assert len({r["bytes"] for r in results.values()}) == 1
    for method in METHODS:
        assert summary["runs"][method]["steps"] == 2  # 8 examples / batch 4, one epoch
    assert (out / "report.md").is_file() and (out / "bpb.png").stat().st_size > 0
    assert (out / "loss_curves.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["results"].keys() == results.keys()
    assert "bits/byte" in printed and "gold_hybrid" in printed
    report = (out / "report.md").read_text()
    assert "Against the CE-only student" in report and "hard_label" in report
    # uld and gold_hybrid trained from the run's teacher cache (no teacher model); cdm ran the teacher online
    assert (summary["teacher_cache"] == str(out / "teacher_cache")
            and (out / "teacher_cache" / "manifest.json").is_file())
    resolved = {m: (out / "students" / m / "resolved_config.yaml").read_text() for m in METHODS}
    for method in CACHED_METHODS:
        assert "teacher_cache" in resolved[method], method
    assert "teacher_cache" not in resolved["cdm"]
    # the hard-label student trained on the teacher's generations, with their manifest
    gen = out / "data" / "teacher_generations"
    assert (gen / "manifest.json").is_file() and len((gen / "examples.jsonl").read_text().splitlines()) == 8


def test_student_tokenizer_differs_from_teacher_and_keeps_digits_apart(tmp_path, model_paths):
    from transformers import AutoTokenizer

    train, _ = tasks.make_split(40, 4, seed=0)
    texts = [e.question for e in train] + [e.completion for e in train]
    path = build_student(tmp_path / "student", texts, TINY, seed=0, teacher=str(model_paths["teacher_bpe"]))
    tok = AutoTokenizer.from_pretrained(path)
    pieces = tok.tokenize("so she has 12 + 30 = 42 apples.")
    assert "1" in pieces and "2" in pieces and "42" not in pieces
    assert tok.decode(tok("Mia has 7 apples, naïve 🙂.", add_special_tokens=False).input_ids) == \
        "Mia has 7 apples, naïve 🙂."  # byte fallback: nothing is lost
    assert "<start_of_turn>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_unknown_method_is_rejected_before_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown"):
        run_demo(tmp_path, TINY, teacher=str(tmp_path), methods=["ce", "distill_harder"])


def test_cli_rejects_bad_budget(capsys):
    assert main(["--n-train", "0"]) == 2
    assert "positive" in capsys.readouterr().err


def test_method_configs_are_valid(tmp_path, model_paths):
    """Every demo method's config passes the engine's validation (paths checked)."""
    from crossdistill.config import config_from_dict

    data = tasks.write_split(tmp_path / "data", *tasks.make_split(4, 2, seed=0))
    for method in METHODS:
        cfg = method_config(method, student=model_paths["student_unigram"],
                            teacher=str(model_paths["teacher_bpe"]), train=data["train"],
                            generated=data["train"], out=tmp_path, budget=TINY, seed=0)
        parsed = config_from_dict(cfg)
        assert (parsed.teacher is None) == (method in ("ce", "hard_label"))
        assert parsed.teacher is None or parsed.teacher.cache is None  # no cache given: the teacher runs online


def test_run_config_picks_the_teacher_source(tmp_path):
    """One config builder for the demo and the benchmarks on its pair: a cache serves only the methods that train
    from a sparse teacher, and only off-policy (on-policy samples are text no cache holds); params and weights pass
    through as copies; CE has no teacher at all."""
    common = dict(student=tmp_path / "s", teacher="t", data=tmp_path / "d.jsonl", output_dir=tmp_path / "o",
                  budget=TINY, seed=3, label="test:x", runs_file=tmp_path / "runs.jsonl", cache=tmp_path / "cache")
    assert "teacher" not in run_config("ce", **common)
    cached = run_config("gold_hybrid", params=GOLD_PARAMS, weights={"gold_hybrid": 2.0}, **common)
    assert cached["teacher"] == {"cache": str(tmp_path / "cache"), "tokenizer": "t", "missing_mass": "tail_bucket"}
    assert cached["loss"] == {"name": "gold_hybrid", "params": GOLD_PARAMS, "weights": {"gold_hybrid": 2.0}}
    cached["loss"]["params"]["beta"] = 0.5
    assert GOLD_PARAMS["beta"] == 0.0
    online = run_config("gold_hybrid", lmbda=0.5, **common)
    assert online["teacher"] == {"model": "t"}
    assert online["onpolicy"] == {"lmbda": 0.5, "max_new_tokens": TINY.gen_tokens, "temperature": 1.0}
    assert run_config("cdm", **common)["teacher"] == {"model": "t"}  # CDM needs full logits: never from a cache
    assert "onpolicy" not in cached and cached["train"]["seed"] == 3 and cached["method"] == "test:x"


def test_transferred_student_is_the_teacher_body_with_its_own_vocabulary(tmp_path, model_paths):
    """The default student: the teacher's layers (weights equal), a vocabulary of its own, embeddings from the
    teacher pieces that spell each token; the old random student stays available."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = str(model_paths["teacher_bpe"])
    train, _ = tasks.make_split(40, 4, seed=0)
    texts = [e.question for e in train] + [e.completion for e in train]
    path = build_student(tmp_path / "student", texts, replace(TINY, student_layers=None), seed=0,
                              teacher=teacher)
    s, t = AutoModelForCausalLM.from_pretrained(path), AutoModelForCausalLM.from_pretrained(teacher)
    assert s.config.num_hidden_layers == t.config.num_hidden_layers
    torch.testing.assert_close(s.model.layers[-1].self_attn.q_proj.weight, t.model.layers[-1].self_attn.q_proj.weight)
    s_tok, t_tok = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(teacher)
    assert s.config.vocab_size == len(s_tok) != len(t_tok)
    rnd = build_student(tmp_path / "random", texts, replace(TINY, student_init="random"), seed=0)
    assert AutoModelForCausalLM.from_pretrained(rnd).config.hidden_size == TINY.student_hidden
    with pytest.raises(ConfigError, match="student_init"):
        build_student(tmp_path / "bad", texts, replace(TINY, student_init="pretrained"), seed=0)


@pytest.mark.slow
def test_real_teacher_quick_demo(tmp_path):
    """The README's demo with the real packaged teacher, at the --quick budget."""
    assert main(["--quick", "--out", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert summary["results"]["teacher"]["bpb"] < summary["results"]["untrained"]["bpb"]


def test_demo_reruns_in_the_same_directory_with_the_same_numbers(tmp_path, model_paths):
    """Running the README command twice must work and repeat a fixed seed's numbers. The second run reuses the
    initial student, the teacher cache and the hard labels (not rewritten); another seed rebuilds all three."""
    out = tmp_path / "demo"
    kwargs = dict(teacher=str(model_paths["teacher_bpe"]), methods=["ce", "hard_label", "gold_hybrid"],
                  progress=False)
    artifacts = [out / "students" / "untrained" / "model.safetensors", out / "teacher_cache" / "manifest.json",
                 out / "data" / "teacher_generations" / "examples.jsonl"]

    def stamps():
        return [p.stat().st_mtime_ns for p in artifacts]

    first = run_demo(out, TINY, **kwargs)
    built = stamps()
    second = run_demo(out, TINY, **kwargs)
    for name in first["results"]:
        assert second["results"][name]["bpb"] == pytest.approx(first["results"][name]["bpb"], rel=1e-6), name
    assert stamps() == built
    run_demo(out, TINY, seed=1, **kwargs)
    assert all(a != b for a, b in zip(stamps(), built))
    train = [json.loads(line)["prompt"] for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    labelled = [json.loads(line)["prompt"] for line in artifacts[2].read_text().splitlines()]
    assert labelled == train  # the hard labels answer seed 1's prompts, not seed 0's


def test_teacher_fine_tune_is_cached_with_its_provenance(tmp_path, model_paths, monkeypatch):
    """The demo's teacher fine-tune trains once (CE through the training engine), is published with a manifest under
    the cache root, and is reused by the next call with the same base, data and recipe; other data: a new one."""
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    budget = replace(TINY, teacher_finetune=8, batch_size=4)
    base = str(model_paths["teacher_bpe"])
    examples = teacher_examples(budget)
    assert len(examples) == 8
    first, reused = fine_tune_teacher(base, examples, budget, progress=False)
    assert not reused and json.loads((tmp_path / "cache" / "models" / first.split("/")[-1] / "manifest.json")
                                     .read_text())["steps"] == 2
    again, reused = fine_tune_teacher(base, examples, budget, progress=False)
    assert (again, reused) == (first, True)
    other, reused = fine_tune_teacher(base, examples[:4], budget, progress=False)
    assert other != first and not reused
    # the fine-tuned teacher differs from its base, and no training leftovers stay in the cache
    import torch
    from transformers import AutoModelForCausalLM

    a, b = AutoModelForCausalLM.from_pretrained(base), AutoModelForCausalLM.from_pretrained(first)
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == sorted(
        {first.split("/")[-1], other.split("/")[-1]})


def test_demo_split_never_holds_a_teacher_question():
    budget = replace(BUDGETS["full"], teacher_finetune=200)
    teacher_q = {e.question for e in teacher_examples(budget)}
    train, held = tasks.make_split(128, 48, 0, style=budget.task_style, exclude=teacher_q)
    assert not teacher_q & {e.question for e in train + held}
