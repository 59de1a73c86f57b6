"""The method registry, and a method added from outside the package through the public API alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

import crossdistill
from crossdistill.errors import ConfigError
from crossdistill.methods import METHODS, Method, MethodOutput, get_method, register, unregister
from crossdistill.methods.base import require


@dataclass(frozen=True)
class ProbeParams:
    """Parameters of the toy method."""

    scale: float = 1.0
    """Multiplier of the squared log-probability gap; > 0."""

    def check(self) -> None:
        require(self.scale > 0, "loss.params.scale", self.scale, "must be > 0")


def probe_loss(ctx, params: ProbeParams, state) -> MethodOutput:
    """Squared gap between student and teacher log-probabilities at the target rows, summed (same vocabulary)."""
    s = ctx.target_logits().log_softmax(-1)
    t = (ctx.teacher_hidden[ctx.mask] @ ctx.teacher_lm_head_weight.T).float()[:, : ctx.vocab_size].log_softmax(-1)
    gap = params.scale * ((s - t) ** 2).sum()
    ce = torch.nn.functional.cross_entropy(ctx.target_logits(), ctx.targets[ctx.mask], reduction="sum")
    return MethodOutput({"gap": gap, "ce": ce}, ctx.num_targets)


PROBE = Method("probe_gap", probe_loss, default_weights={"gap": 1.0, "ce": 0.0}, params=ProbeParams,
               teacher="hidden", description="test-only: squared log-probability gap")


@pytest.fixture
def probe():
    register(PROBE)
    yield PROBE
    unregister(PROBE.name)


def test_builtins_are_registered_once_with_typed_params():
    names = {"ce", "forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd", "adaptive_kl", "uld",
             "gold_hybrid", "multilevel_ot", "multilevel_ot_official", "cdm", "dskd", "dskd_cma", "dskd_eta"}
    assert names <= set(METHODS)
    for m in METHODS.values():
        m.parse_params({})  # every method's defaults parse and pass their own checks
        assert m.default_weights and m.description


def test_sample_terms_must_be_terms_of_the_method():
    """A misspelt sample term would stay on for the student's own samples: registration refuses it."""
    with pytest.raises(ValueError, match=r"sample_terms \['gapp'\] are not among its terms"):
        register(Method("probe_bad_sample_terms", probe_loss, default_weights={"gap": 1.0}, sample_terms=("gapp",)))
    assert "probe_bad_sample_terms" not in METHODS


def test_register_refuses_a_taken_name(probe):
    other = Method(probe.name, probe_loss, default_weights={"gap": 1.0})
    with pytest.raises(ValueError, match="already registered"):
        register(other)
    register(probe)  # the same record again is fine (re-import)
    with pytest.raises(TypeError, match="takes a crossdistill.methods.Method"):
        register("probe_gap")


def test_unknown_method_lists_what_exists():
    with pytest.raises(ConfigError,
                       match=r"loss.name='nope' is not a registered method; choose one of \['adaptive_kl'"):
        get_method("nope")


@pytest.mark.parametrize("params, message", [
    ({"scale": 0}, r"loss.params.scale=0.0 must be > 0"),
    ({"scale": "big"}, r"loss.params.scale='big' has the wrong type"),
    ({"scale": float("nan")}, r"loss.params.scale=nan is not a finite number"),
    ({"scael": 1}, r"loss.params has unknown keys \['scael'\] for loss.name='probe_gap'; it accepts \['scale'\]"),
])
def test_params_are_typed_and_checked_before_any_weights_load(probe, overrides, tmp_path, params, message):
    with pytest.raises(ConfigError, match=message):
        crossdistill.load_config(None, overrides(tmp_path / "out", "loss.name=probe_gap",
                                                 f"loss.params={json.dumps(params).replace('NaN', '.nan')}"))


def test_an_outside_method_trains_through_the_public_api(probe, overrides, tmp_path):
    """``register`` + ``distill``: the toy method trains end to end and its terms are logged."""
    cfg = crossdistill.load_config(None, overrides(tmp_path / "out", "loss.name=probe_gap", "loss.params={scale: 2.0}",
                                                   "train.max_steps=4", "train.logging_steps=1"))
    record = crossdistill.distill(cfg)
    assert record["loss"] == "probe_gap" and record["steps"] == 4
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    gaps = [h["loss_gap"] for h in history if "loss_gap" in h]
    assert len(gaps) == 4 and gaps[-1] < gaps[0]
