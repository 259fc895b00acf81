"""subp_fx.algorithm.masks: golden data from the paper authors' implementation, regrowth properties, layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subp_fx.algorithm.masks import (
    block_importance,
    expand_block_mask,
    kept_per_row,
    prune_rate_at,
    to_block_layout,
    uniform_block_mask,
)

GOLDEN_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "golden"  # <repo>/../shared/golden
# Shipped with the tests: 12 of the 63 cases and the schedules, bit for bit (golden/make_subset.py).
SUBSET_DIR = Path(__file__).resolve().parent / "golden"


# ---------------------------------------------------------------------------------------------
# Golden data: the full set where ../shared/golden exists, else the subset in tests/
# ---------------------------------------------------------------------------------------------


def _load_golden(json_path: Path, npz_path: Path):
    if not (json_path.is_file() and npz_path.is_file()):
        return None, None
    with open(json_path) as f:
        meta = json.load(f)
    with np.load(npz_path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return meta, arrays


FULL_META, FULL_ARRAYS = _load_golden(GOLDEN_DIR / "subp_golden.json", GOLDEN_DIR / "subp_masks.npz")
SUBSET_META, SUBSET_ARRAYS = _load_golden(SUBSET_DIR / "subp_golden_subset.json", SUBSET_DIR / "subp_masks_subset.npz")
GOLDEN_META, GOLDEN_ARRAYS = (FULL_META, FULL_ARRAYS) if FULL_META is not None else (SUBSET_META, SUBSET_ARRAYS)
needs_full_golden = pytest.mark.skipif(
    FULL_META is None, reason=f"full golden data not found at {GOLDEN_DIR}; the shipped subset is tested instead"
)
GOLDEN_CASES = GOLDEN_META["cases"]
SCHEDULE_NAMES = ("linear", "exp", "cos", "cubic")


def _case_tensors(case):
    key = case["key"]
    return (
        torch.from_numpy(GOLDEN_ARRAYS[f"{key}_weight"]),
        torch.from_numpy(GOLDEN_ARRAYS[f"{key}_prior_block_mask"]),
        torch.from_numpy(GOLDEN_ARRAYS[f"{key}_score"]),
        torch.from_numpy(GOLDEN_ARRAYS[f"{key}_block_mask"]),
    )


def test_golden_subset_is_shipped_and_covers_every_criterion_N_kernel_and_rate():
    cases = SUBSET_META["cases"]
    assert len(cases) == 12
    assert {c["criterion"] for c in cases} == {"L1", "L2", "BPAR"}
    assert {c["N"] for c in cases} == {16, 32} and {c["kernel"] for c in cases} == {1, 3}
    assert len({c["prune_rate"] for c in cases}) == 3


@needs_full_golden
def test_golden_has_all_cases():
    assert len(FULL_META["cases"]) == 63
    assert {c["criterion"] for c in FULL_META["cases"]} == {"L1", "L2", "BPAR"}


@needs_full_golden
def test_golden_subset_is_the_full_data_bit_for_bit():
    full_cases = {case["key"]: case for case in FULL_META["cases"]}
    for case in SUBSET_META["cases"]:
        assert case == full_cases[case["key"]]
    assert SUBSET_META["schedules"] == FULL_META["schedules"]
    for name, array in SUBSET_ARRAYS.items():
        assert array.dtype == FULL_ARRAYS[name].dtype and np.array_equal(array, FULL_ARRAYS[name]), name


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: f"{c['key']}-{c['criterion']}-N{c['N']}")
def test_golden_mask(case):
    weight, prior, _, golden_mask = _case_tensors(case)
    rate = case["prune_rate"]
    mask = uniform_block_mask(weight, case["N"], rate, rate, case["criterion"], block_mask=prior, alpha=case["alpha"])
    assert mask.shape == golden_mask.shape
    assert torch.equal(mask, golden_mask), f"{int((mask != golden_mask).sum())} blocks differ from the reference"
    per_row = mask.sum(dim=1)
    assert (per_row == case["kept_per_row"]).all(), per_row
    assert case["kept_per_row"] == kept_per_row(rate, case["in_channels"])


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: f"{c['key']}-{c['criterion']}-N{c['N']}")
def test_golden_score(case):
    weight, prior, golden_score, _ = _case_tensors(case)
    score = block_importance(weight, case["N"], case["criterion"], block_mask=prior, alpha=case["alpha"])
    assert score.shape == golden_score.shape
    # rtol 1e-5, plus an absolute floor scaled to the case: for 3 BPAR cases with N=32 a few
    # scores of ~1e-3 differ from the reference by ~5.6e-9. That is float32 cancellation in
    # l1_share - redundancy_share (both terms ~1.6e-2); a float64 computation is as far from the
    # golden as ours, so this is rounding in the reference, not a different formula.
    atol = 1e-5 * float(golden_score.abs().max())
    torch.testing.assert_close(score, golden_score, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_golden_schedules(name):
    schedules = GOLDEN_META["schedules"]
    golden = schedules["values"][name]
    epochs = schedules["epochs"]
    assert epochs == list(range(200)) and len(golden) == 200
    ours = [
        prune_rate_at(e, name, schedules["prune_rate"], schedules["decay_start"], schedules["decay_end"])
        for e in epochs
    ]
    mismatches = [(e, o, g) for e, o, g in zip(epochs, ours, golden) if o != g]  # bit for bit
    assert not mismatches, mismatches[:5]


# ---------------------------------------------------------------------------------------------
# Schedules beyond the golden window
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_schedule_zero_window_is_full_rate_from_start(name):
    assert prune_rate_at(0, name, 0.4, 0, 0) == 0.4
    assert prune_rate_at(57, name, 0.4, 0, 0) == 0.4


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_schedule_one_epoch_window(name):
    # Regression: exp once divided by ramp(0) == 0 for a one-epoch window.
    assert prune_rate_at(10, name, 0.5, 10, 11) == 0.0
    assert prune_rate_at(11, name, 0.5, 10, 11) == 0.5


# ---------------------------------------------------------------------------------------------
# Regrowth properties
# ---------------------------------------------------------------------------------------------


def _counts(in_channels: int, prune_rate: float, current_rate: float) -> tuple[int, int]:
    return int(prune_rate * in_channels), int((prune_rate - current_rate) * in_channels)


@st.composite
def _mask_problems(draw):
    N = draw(st.sampled_from([1, 2, 4]))
    rows = draw(st.integers(1, 4))
    in_channels = draw(st.integers(2, 24))
    kernel = draw(st.sampled_from([1, 3]))
    prune_rate = draw(st.floats(0.0, 0.95))
    current_rate = prune_rate * draw(st.floats(0.0, 1.0))
    criterion = draw(st.sampled_from(["L1", "L2", "BPAR"]))
    seed = draw(st.integers(0, 2**31 - 1))
    with_prior = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows * N, in_channels, kernel, kernel, generator=g)
    prior = None
    if with_prior:
        # Some blocks already pruned, at least one kept per row (as after any real update).
        prior = (torch.rand(rows, in_channels, generator=g) > 0.4).float()
        prior[:, 0] = 1.0
    return dict(
        weight=weight,
        N=N,
        prune_rate=prune_rate,
        current_rate=current_rate,
        criterion=criterion,
        prior=prior,
        seed=seed,
    )


@settings(max_examples=80, deadline=None, database=None)  # no .hypothesis/ in the repo
@given(_mask_problems())
def test_regrowth_properties(problem):
    weight, N, p, pe = problem["weight"], problem["N"], problem["prune_rate"], problem["current_rate"]
    in_channels = weight.shape[1]
    P, G = _counts(in_channels, p, pe)
    common = dict(block_mask=problem["prior"], alpha=1.0, tau=1.0)
    mask = uniform_block_mask(
        weight, N, p, pe, problem["criterion"], generator=torch.Generator().manual_seed(problem["seed"]), **common
    )
    assert mask.shape == (weight.shape[0] // N, in_channels)
    assert ((mask == 0) | (mask == 1)).all()
    assert (mask.sum(dim=1) == in_channels - P + G).all(), (mask.sum(dim=1), P, G)

    # Step 1 alone (no regrowth): current_rate == prune_rate gives G == 0.
    step1 = uniform_block_mask(weight, N, p, p, problem["criterion"], **common)
    assert (step1.sum(dim=1) == in_channels - P).all()
    # Step 1 keeps the highest scores: every kept block scores >= every pruned one, per row.
    score = block_importance(weight, N, problem["criterion"], block_mask=problem["prior"])
    if 0 < P < in_channels:
        kept_min = torch.where(step1 == 1, score, torch.inf).min(dim=1).values
        pruned_max = torch.where(step1 == 0, score, -torch.inf).max(dim=1).values
        assert (kept_min >= pruned_max).all()
    # Regrowth only adds blocks pruned in step 1, exactly G per row.
    assert (mask >= step1).all(), "a block kept by step 1 was dropped"
    assert ((mask - step1).sum(dim=1) == G).all()


def _one_row_weight(scores_by_channel: list[float], N: int = 2) -> torch.Tensor:
    """A (N, C_in, 1, 1) weight (one block-row) whose L1 block scores are N * |s_c|."""
    return torch.tensor(scores_by_channel, dtype=torch.float32).reshape(1, -1, 1, 1).expand(N, -1, 1, 1).contiguous()


# One row, C_in = 8, prune_rate 0.5 -> P = 4; current 0.375 -> G = int(0.125 * 8) = 1.
# Channel order is scrambled relative to the score order, so a mix-up between sorted positions
# and channel indices is caught.
_ROW = [5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0]
_PRUNED_ASCENDING = [1, 5, 3, 7]  # channels holding scores 1, 2, 3, 4


def _expected_regrowth(tau: float) -> np.ndarray:
    s = np.array([_ROW[c] * 2 for c in _PRUNED_ASCENDING], dtype=np.float64)  # L1 with N = 2
    z = s / np.linalg.norm(s) / tau
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("tau", [1.0, 0.25])
def test_regrowth_frequencies_follow_softmax_of_normalised_scores(tau):
    weight = _one_row_weight(_ROW)
    draws = 10000
    counts = np.zeros(len(_PRUNED_ASCENDING))
    for seed in range(draws):
        mask = uniform_block_mask(weight, 2, 0.5, 0.375, "L1", tau=tau, generator=torch.Generator().manual_seed(seed))
        regrown = [i for i, c in enumerate(_PRUNED_ASCENDING) if mask[0, c] == 1]
        assert len(regrown) == 1 and mask.sum() == 5
        counts[regrown[0]] += 1
    expected = _expected_regrowth(tau)
    freq = counts / draws
    # 4.5 standard errors per cell: a false failure has probability ~1e-5, while a wrong
    # distribution (uniform, reversed, no normalisation, no tau) is off by > 0.05.
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / draws)
    assert (np.abs(freq - expected) <= tolerance).all(), (freq, expected, tolerance)
    chi2 = float((((counts - draws * expected) ** 2) / (draws * expected)).sum())
    assert chi2 < 21.1, (chi2, freq, expected)  # chi-square, 3 dof, p = 1e-4


def test_small_tau_regrows_the_highest_pruned_scores():
    # tau = 0.01: normalised pruned scores are ~0.18 apart, so the odds against the highest one are
    # ~e^-18 per draw. (A much smaller tau underflows the softmax to exact zeros, and
    # torch.multinomial without replacement then fills the 2nd+ draw from zero-probability
    # categories by its own tie-break, so G >= 2 would no longer test anything.)
    weight = _one_row_weight(_ROW)
    for seed in range(50):
        generator = torch.Generator().manual_seed(seed)
        mask = uniform_block_mask(weight, 2, 0.5, 0.375, "L1", tau=0.01, generator=generator)  # G = 1
        assert mask[0].tolist() == [1, 0, 1, 0, 1, 0, 1, 1]  # score 4 (channel 7) back
        mask = uniform_block_mask(weight, 2, 0.5, 0.25, "L1", tau=0.01, generator=generator)  # G = 2
        assert mask[0].tolist() == [1, 0, 1, 1, 1, 0, 1, 1]  # scores 3 and 4 (channels 3, 7) back
        mask = uniform_block_mask(weight, 2, 0.5, 0.25, "L1", tau=1e-6, generator=generator)  # G = 2
        assert mask[0, 7] == 1 and mask.sum() == 6  # the top pruned score always comes back


def test_generator_determinism():
    weight = torch.randn(64, 40, 3, 3, generator=torch.Generator().manual_seed(3))

    def draw(seed):
        return uniform_block_mask(weight, 8, 0.5, 0.2, "BPAR", generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(11), draw(11))
    assert not torch.equal(draw(11), draw(12))  # 8 rows choosing 12 of 20: a collision is ~impossible


def test_no_regrowth_does_not_consume_randomness():
    # With G == 0 the mask is deterministic whatever the generator.
    weight = torch.randn(32, 24, 3, 3, generator=torch.Generator().manual_seed(5))
    a = uniform_block_mask(weight, 16, 0.5, 0.5, "L2", generator=torch.Generator().manual_seed(1))
    b = uniform_block_mask(weight, 16, 0.5, 0.5, "L2", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_scores_use_weight_times_current_mask():
    # The v2 rule: a currently pruned block scores as a zero block, even if its weight is large.
    weight = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    prior = torch.ones(2, 6)
    prior[0, 2] = 0
    prior[1, 4] = 0
    for criterion in ("L1", "L2"):
        masked_score = block_importance(weight, 4, criterion, block_mask=prior)
        assert torch.equal(
            masked_score, block_importance(weight * expand_block_mask(prior, weight.shape), 4, criterion)
        )
        assert masked_score[0, 2] == 0 and masked_score[1, 4] == 0


def test_bpar_by_hand():
    # BPAR without a prior mask on a tiny weight, written from the spec in float64.
    weight = torch.randn(4, 3, 1, 2, generator=torch.Generator().manual_seed(9))
    N = 2
    blocks = to_block_layout(weight, N).double()
    alpha = 0.7
    expected = torch.empty(2, 3, dtype=torch.float64)
    for r in range(2):
        l1 = blocks[r].abs().sum(-1)
        unit = blocks[r] / blocks[r].norm(dim=-1, keepdim=True)
        cos = torch.tensor(
            [sum(abs(float(unit[i] @ unit[j])) for j in range(3)) for i in range(3)], dtype=torch.float64
        )
        expected[r] = l1 / l1.sum() - alpha * cos / cos.sum()
    score = block_importance(weight, N, "BPAR", alpha=alpha)
    torch.testing.assert_close(score.double(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Invalid inputs
# ---------------------------------------------------------------------------------------------


def _weight(c_out=8, c_in=6):
    return torch.randn(c_out, c_in, 3, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: uniform_block_mask(_weight(), 3, 0.5, 0.5, "L1"), r"\bN\b"),
        (lambda: block_importance(_weight(), 3, "L1"), r"\bN\b"),
        (lambda: to_block_layout(_weight(), 3), r"\bN\b"),
        (lambda: uniform_block_mask(_weight(), 4, 1.0, 0.5, "L1"), "prune_rate"),
        (lambda: uniform_block_mask(_weight(), 4, -0.1, 0.0, "L1"), "prune_rate"),
        (lambda: uniform_block_mask(_weight(), 4, 0.5, 0.6, "L1"), "current_rate"),
        (lambda: uniform_block_mask(_weight(), 4, 0.5, -0.1, "L1"), "current_rate"),
        (lambda: uniform_block_mask(_weight(), 4, 0.5, 0.5, "L3"), "criterion"),
        (lambda: block_importance(_weight(), 4, "bpar"), "criterion"),
        (lambda: uniform_block_mask(_weight(), 4, 0.5, 0.2, "L1", tau=0.0), "tau"),
        (lambda: prune_rate_at(5, "step", 0.5, 0, 10), "schedule"),
        (lambda: prune_rate_at(5, "linear", 0.5, 10, 5), "decay_start"),
        (lambda: uniform_block_mask(_weight(), 4, 0.5, 0.5, "L1", block_mask=torch.ones(4, 6)), "block_mask"),
        (lambda: block_importance(_weight(), 4, "BPAR", block_mask=torch.ones(2, 5)), "block_mask"),
        (lambda: expand_block_mask(torch.ones(2, 5), (8, 6, 3, 3)), "block mask"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


# ---------------------------------------------------------------------------------------------
# Block layout
# ---------------------------------------------------------------------------------------------


def test_block_layout_matches_hand_loop():
    c_out, c_in, kh, kw, N = 6, 3, 2, 3, 2
    weight = torch.arange(c_out * c_in * kh * kw, dtype=torch.float32).reshape(c_out, c_in, kh, kw)
    blocks = to_block_layout(weight, N)
    assert blocks.shape == (c_out // N, c_in, N * kh * kw)
    for r in range(c_out // N):
        for c in range(c_in):
            expected = [float(weight[r * N + n, c, i, j]) for n in range(N) for i in range(kh) for j in range(kw)]
            assert blocks[r, c].tolist() == expected


def test_expand_block_mask_matches_hand_loop_and_round_trips():
    c_out, c_in, kh, kw, N = 6, 4, 3, 3, 2
    block_mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    full = expand_block_mask(block_mask, (c_out, c_in, kh, kw))
    assert full.shape == (c_out, c_in, kh, kw)
    for o in range(c_out):
        for c in range(c_in):
            assert (full[o, c] == block_mask[o // N, c]).all()
    weight = torch.randn(c_out, c_in, kh, kw, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_block_layout(weight * full, N), to_block_layout(weight, N) * block_mask[..., None])
    # A block is zero in block layout exactly where the block mask is zero.
    assert torch.equal((to_block_layout(weight * full, N).abs().sum(-1) > 0).float(), block_mask)


def test_kept_per_row():
    assert kept_per_row(60 / 128, 64) == 34
    assert kept_per_row(0.3, 16) == 12  # int(4.8) = 4 pruned
    assert kept_per_row(0.0, 7) == 7
    assert math.isclose(kept_per_row(0.5, 9), 5)
