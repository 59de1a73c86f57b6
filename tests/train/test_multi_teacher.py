"""Several teachers (``teachers:``): two teachers with different tokenizers give exactly the weighted sum of the
single-teacher objectives on the same batch; a two-teacher run trains end to end; what is not supported is refused
before any weights load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from crossdistill.config import ConfigError, load_config
from crossdistill.train import multi_teacher
from crossdistill.train.run import batch_loss, prepare, run_training


def two_teachers(model_paths, a=0.3, b=0.7):
    return (f"teachers=[{{name: bpe, model: {model_paths['teacher_bpe']}, weight: {a}}}, "
            f"{{name: unigram, model: {model_paths['student_unigram']}, weight: {b}}}]")


@pytest.mark.parametrize("loss", ["uld", "gold_hybrid"])
def test_two_tokenizers_give_the_weighted_sum_of_single_teacher_losses(tmp_path, overrides, model_paths, loss):
    """Student WordPiece; teachers byte-level BPE and Unigram, each aligned to the student on its own. GOLD keeps a
    vocabulary map per teacher (its per-run state), ULD none."""
    student_args = [f"student.model={model_paths['student_wordpiece']}", f"loss.name={loss}"]
    multi = load_config(None, overrides(tmp_path / "m", *student_args, two_teachers(model_paths), teacher=None))
    p = prepare(multi, progress=False)
    assert [e.name for e in p.extra_teachers] == ["unigram"] and p.extra_teachers[0].separate
    assert p.cfg.teacher.model == str(model_paths["teacher_bpe"])  # the first is the run's teacher

    def model(key):
        return AutoModelForCausalLM.from_pretrained(model_paths[key]).eval()

    student, t_bpe, t_uni = model("student_wordpiece"), model("teacher_bpe"), model("student_unigram")
    indices = [0, 3, 5, 8]
    combined = multi_teacher.batch_loss(p, student, [t_bpe, t_uni], indices)
    singles = []
    for key, teacher in (("teacher_bpe", t_bpe), ("student_unigram", t_uni)):
        cfg = load_config(None, overrides(tmp_path / key, *student_args, teacher=key))
        singles.append(batch_loss(prepare(cfg, progress=False), student, teacher, indices))
    assert singles[0] != pytest.approx(singles[1])  # two different teachers
    assert combined == pytest.approx(0.3 * singles[0] + 0.7 * singles[1], rel=1e-6, abs=1e-7)


def test_two_teacher_run_trains_logs_and_records_every_teacher(tmp_path, overrides, model_paths):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", f"student.model={model_paths['student_wordpiece']}",
                                      "loss.name=uld", two_teachers(model_paths, 0.5, 0.5), teacher=None))
    record = run_training(cfg)
    assert record["teacher"] == str(model_paths["teacher_bpe"]) and record["teacher_bpb"] is not None
    history = json.load(open(tmp_path / "run" / "out" / "trainer_state.json"))["log_history"]
    step = next(h for h in history if "loss_uld@unigram" in h)
    assert {"loss_ce@bpe", "loss_uld@bpe", "loss_ce@unigram", "loss_uld@unigram"} <= set(step)
    assert step["loss"] == pytest.approx(0.5 * (step["loss_ce@bpe"] + 1.5 * step["loss_uld@bpe"])
                                         + 0.5 * (step["loss_ce@unigram"] + 1.5 * step["loss_uld@unigram"]), rel=1e-4)
    manifest = json.load(open(tmp_path / "run" / "out" / "manifest.json"))
    assert set(manifest["tokenizer_hashes"]) == {"student", "teacher", "teacher@unigram"}
    reloaded = load_config(tmp_path / "run" / "out" / "resolved_config.yaml")  # the resolved form loads back
    assert [t.name for t in reloaded.teachers] == ["bpe", "unigram"]
    assert all(torch.isfinite(q).all() for q in AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "out")
               .parameters())


@pytest.mark.parametrize(("extra", "match"), [
    (["teachers=[{model: org/a}]"], r"teachers has 1 entry; several teachers need at least two"),
    (["teacher.model=org/t", "teachers=[{model: org/a}, {model: org/b}]"], r"teacher: and teachers: are both set"),
    (["teachers=[{model: org/a, weight: -1}, {model: org/b}]"], r"teachers\[0\] \(teacher1\).weight=-1.0 is negative"),
    (["teachers=[{model: org/a, weight: 0}, {model: org/b, weight: 0}]"], r"every weight is 0"),
    (["teachers=[{model: org/a, name: x}, {model: org/b, name: x}]"], r"names \['x'\] occur more than once"),
    (["teachers=[{model: org/a}, {model: org/b, cache: c}]"], r"teachers\[1\] \(teacher2\).cache is set"),
    (["teachers=[{model: org/a}, {model: org/b}]", "onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=4"],
     r"off-policy only for now"),
    (["teachers=[{model: org/a}, {model: org/b}]", "loss.name=ce"], r"which uses no teacher"),
    (["teachers=[{model: org/a}, {model: ./nowhere}]"], r"teachers\[1\] \(teacher2\).model='./nowhere' does not exist"),
])
def test_refused_before_weights_load(tmp_path, model_paths, chat_data, extra, match):
    args = [f"student.model={model_paths['student_wordpiece']}", f"data.train={chat_data}", "loss.name=uld", *extra]
    with pytest.raises(ConfigError, match=match):
        load_config(None, args)
