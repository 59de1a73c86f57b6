"""FLOPs accounting: Eq. 69 and Eq. 9 / Table 2.

F(N) is checked against (a) the σ1, σ2 values at the paper's shape (ρ = 128, ω = 12), (b) an independent
operation-by-operation count of the fixed-aspect-ratio model family the equation is derived from, and (c) the
per-token forward-FLOPs column of Busbridge et al. 2025, Table 13, for the rows quoted below (within 0.2%).

Run: python -m pytest tests/scaling/test_flops.py -q
"""

import pytest

from crossdistill.scaling import (
    PAPER_SHAPE,
    ArchitectureShape,
    Scenario,
    distillation_flops,
    forward_flops_per_token,
    supervised_flops,
)


def test_sigma_constants_match_methods_md():
    assert PAPER_SHAPE.omega == pytest.approx(12.0)
    assert PAPER_SHAPE.sigma1 == pytest.approx(0.037857, abs=1e-6)
    assert PAPER_SHAPE.sigma2 == pytest.approx(2.201285, abs=1e-6)


def count_forward_flops(n_layers: int, rho=128, n_ctx=4096, n_vocab=32168, ffn_ratio=8 / 3):
    """Operation count of one token's forward pass: every matmul costs 2 FLOPs per weight; attention scores and the
    weighted sum of values cost 2 n_ctx d_model per layer (Kaplan et al.'s convention); the unembedding 2 d V."""
    d = rho * n_layers
    qkvo = 4 * d * d
    mlp = 3 * d * (ffn_ratio * d)
    non_embedding = n_layers * (qkvo + mlp)
    flops = n_layers * (2 * qkvo + 2 * mlp + 2 * n_ctx * d) + 2 * d * n_vocab
    return non_embedding, flops


@pytest.mark.parametrize("n_layers", [2, 9, 16, 20, 34, 48, 96])
def test_eq69_equals_operation_count(n_layers):
    N, expected = count_forward_flops(n_layers)
    assert forward_flops_per_token(N) == pytest.approx(expected, rel=1e-12)
    assert abs(forward_flops_per_token(N) / expected - 1) < 0.002  # the 0.2% criterion, met with margin


def test_eq69_grouped_query_shape():
    shape = ArchitectureShape(group_size=4)
    n_layers, d = 10, 1280
    N = n_layers * (2 * d * d + 2 * d * d / 4 + 3 * d * (8 / 3) * d)
    expected = 2 * N + n_layers * 2 * 4096 * d + 2 * d * 32168
    assert forward_flops_per_token(N, shape) == pytest.approx(expected, rel=1e-12)


def test_flops_approach_2n_for_large_models():
    assert forward_flops_per_token(1e13) / 2e13 < 1.01
    assert forward_flops_per_token(1e8) / 2e8 > 1.5  # the vocabulary term dominates small models


def test_scenarios_eq9():
    NS, DS, NT, DT = 1e9, 2e10, 7e9, 1e12
    FS, FT = forward_flops_per_token(NS), forward_flops_per_token(NT)
    assert supervised_flops(NS, DS) == pytest.approx(3 * FS * DS)
    expected = {
        "best-case": 3 * FS * DS,
        "teacher-inference": 3 * FS * DS + FT * DS,
        "teacher-pretraining": 3 * FS * DS + 3 * FT * DT,
        "teacher-pretraining-inference": 3 * FS * DS + FT * (DS + 3 * DT),
    }
    for name, value in expected.items():
        assert distillation_flops(NS, DS, NT, DT, name) == pytest.approx(value, rel=1e-14)
    assert Scenario("teacher-inference").deltas == (1, 0)


def test_bad_flops_inputs():
    with pytest.raises(ValueError, match="N"):
        forward_flops_per_token(-1.0)
    with pytest.raises(ValueError, match="D_S"):
        distillation_flops(1e9, -1.0, 1e9, 1e9, "best-case")
    with pytest.raises(ValueError):
        distillation_flops(1e9, 1e9, 1e9, 1e9, "no-such-scenario")
    with pytest.raises(ValueError, match="rho"):
        ArchitectureShape(rho=0)


# Busbridge et al. 2025, Table 13: non-embedding parameters N -> forward FLOPs per token F(N), as printed (the table
# rounds to three or four significant figures).
TABLE_13 = [(546e6, 1.415e9), (1.821e9, 4.28e9), (7.747e9, 16.99e9)]


@pytest.mark.parametrize("N, table_flops", TABLE_13)
def test_eq69_matches_table_13(N, table_flops):
    assert abs(forward_flops_per_token(N) / table_flops - 1) < 0.002


def test_eq69_table_13_rows_vectorized():
    import numpy as np

    got = forward_flops_per_token(np.array([n for n, _ in TABLE_13]))
    np.testing.assert_allclose(got, [f for _, f in TABLE_13], rtol=2e-3)
