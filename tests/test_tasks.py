"""Offline task generators and the answer scorer. Run: python -m pytest tests/test_tasks.py -q"""

from __future__ import annotations

import json

import pytest

from crossdistill import tasks


def test_split_is_reproducible_and_disjoint():
    a_train, a_held = tasks.make_split(200, 50, seed=3)
    b_train, b_held = tasks.make_split(200, 50, seed=3)
    assert a_train == b_train and a_held == b_held
    assert not {e.question for e in a_train} & {e.question for e in a_held}
    assert {e.task for e in a_train} == set(tasks.FAMILIES)


@pytest.mark.parametrize("style", tasks.STYLES)
@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_every_completion_states_its_answer(family, style):
    for ex in tasks.make_examples(50, seed=1, families=[family], style=style):
        assert tasks.score(ex.completion, ex.answer), ex
        assert ex.answer >= 2  # no "1 apples"
        # the worked equation in the completion is arithmetic that holds
        for lhs, rhs in _equations(ex.completion):
            assert eval(lhs) == int(rhs), ex.completion  # noqa: S307 (digits and + - * only)


def _equations(text):
    import re

    return re.findall(r"(\d+ [-+*] \d+) = (\d+)", text)


@pytest.mark.parametrize("text,expected", [
    ("so he has 7 apples. The answer is 7.", 7),
    ("The answer is: 1,200 coins", 1200),
    ("12 + 30 = 42\n#### 42", 42),
    ("first 3 then 5 and finally 9", 9),
    ("The answer is -4.", -4),
    ("no digits at all", None),
])
def test_extract_answer(text, expected):
    assert tasks.extract_answer(text) == expected


def test_score_rejects_wrong_and_missing():
    assert not tasks.score("The answer is 8.", 7)
    assert not tasks.score("I don't know", 7)
    assert tasks.score("The answer is 7", "7")


def test_records_are_training_data(tmp_path):
    from crossdistill.data.load import load_examples

    paths = tasks.write_split(tmp_path, *tasks.make_split(6, 2, seed=0))
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    assert {"prompt", "completion", "answer", "task"} <= set(rows[0])
    assert len(load_examples(paths["train"])) == 6


def test_varied_style_varies_the_wording_and_keeps_the_split_disjoint():
    train, held = tasks.make_split(80, 20, seed=0, style="varied")
    assert not {e.question for e in train} & {e.question for e in held}
    # several openings per family, not one template (numbers and names removed)
    import re

    for family in tasks.FAMILIES:
        shapes = {re.sub(r"\d+", "N", e.completion.split(",")[0].split(":")[0])[:25] for e in train if e.task == family}
        assert len(shapes) >= 3, (family, shapes)
    assert tasks.make_split(80, 20, seed=0, style="varied") == (train, held)


def test_bad_arguments():
    with pytest.raises(ValueError, match="style='poetry'"):
        tasks.make_examples(3, 0, style="poetry")
    with pytest.raises(ValueError, match="families"):
        tasks.make_examples(3, 0, families=["division"])
    with pytest.raises(ValueError, match="n=-1"):
        tasks.make_examples(-1, 0)
