"""Provenance manifests. Run: python -m pytest tests/test_manifest.py -q"""

from __future__ import annotations

import json

import pytest

from crossdistill.manifest import Manifest, ManifestMismatchError, dataset_fingerprint, text_hash, tokenizer_hash


def make(**kw) -> Manifest:
    base = dict(kind="cache", format_version=1, tool_version="0.1.0", teacher="org/teacher",
                tokenizer_hashes={"teacher": "aaa"}, chat_templates={"teacher": "t1"},
                temperatures={"distillation": 1.0}, k=32, dataset_fingerprint="fp:10", extra={"support": "topk"})
    return Manifest(**{**base, **kw})


def test_write_read_round_trip_is_canonical(tmp_path):
    m = make(files=[{"name": "a", "sha256": "x"}])
    path = m.write(tmp_path)
    assert Manifest.read(tmp_path) == m == Manifest.read(path)
    assert path.read_text() == make(files=[{"name": "a", "sha256": "x"}]).to_json()  # same content, same bytes
    assert json.loads(path.read_text())["k"] == 32


def test_check_passes_on_equal_and_on_fields_not_asked_for():
    m = make()
    m.check(make())
    m.check({"k": 32})
    m.check({"teacher": None, "tokenizer_hashes": {}, "extra": {"support": "topk"}})
    m.check(make(tool_version="9.9", files=[{"x": 1}]))  # informational fields never refuse


def test_check_lists_every_difference_with_values():
    with pytest.raises(ManifestMismatchError) as err:
        make().check(make(k=64, dataset_fingerprint="other:10", tokenizer_hashes={"teacher": "bbb"},
                          temperatures={"distillation": 2.0}, extra={"support": "sampled"}))
    text = str(err.value)
    for expected in ("k: artifact has 32, expected 64", "dataset_fingerprint: artifact has 'fp:10'",
                     "tokenizer_hashes['teacher']: artifact has 'aaa', expected 'bbb'",
                     "temperatures['distillation']: artifact has 1.0, expected 2.0",
                     "extra['support']: artifact has 'topk', expected 'sampled'"):
        assert expected in text
    assert len(err.value.differences) == 5
    assert "Rebuild the artifact" in text


def test_missing_dict_key_is_a_difference():
    with pytest.raises(ManifestMismatchError, match=r"tokenizer_hashes\['student'\]: artifact has '<absent>'"):
        make().check({"tokenizer_hashes": {"student": "s"}})


def test_unknown_fields_are_errors(tmp_path):
    with pytest.raises(KeyError, match="not a manifest field"):
        make().check({"kk": 3})
    (tmp_path / "manifest.json").write_text(json.dumps({**json.loads(make().to_json()), "new_field": 1}))
    with pytest.raises(ValueError, match="unknown fields"):
        Manifest.read(tmp_path)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        Manifest.read(tmp_path / "nowhere")


def test_tokenizer_hash_identity_and_difference(tokenizers, tokenizer_paths):
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tokenizer_paths["bpe"])
    again("some text", return_offsets_mapping=True)  # using a tokenizer does not change its hash
    assert tokenizer_hash(again) == tokenizer_hash(tokenizers["bpe"])
    hashes = {tokenizer_hash(t) for t in tokenizers.values()}
    assert len(hashes) == 3
    again.add_tokens(["<new>"])
    assert tokenizer_hash(again) != tokenizer_hash(tokenizers["bpe"])


def test_dataset_fingerprint_order_and_content_sensitive():
    a, b = {"text": "x", "id": 1}, {"text": "y"}
    assert dataset_fingerprint([a, b]) == dataset_fingerprint([{"id": 1, "text": "x"}, b])  # key order irrelevant
    assert dataset_fingerprint([a, b]) != dataset_fingerprint([b, a])
    assert dataset_fingerprint([a, b]) != dataset_fingerprint([a, {"text": "y "}])
    assert dataset_fingerprint([a]).endswith(":1")
    assert text_hash(None) is None and text_hash("a") != text_hash("b")
