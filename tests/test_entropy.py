"""full_entropy / clamped_entropy against the float64 reference definition (entropy.reference_clamped_entropy),
their gradients, ties, and the fast kept-set selection against the exact one (including rows built to defeat it)."""
import math

import pytest
import torch

from aent_cli.algos import entropy_select as select
from aent_cli.algos.entropy import clamped_entropy, full_entropy, reference_clamped_entropy

pytestmark = pytest.mark.usefixtures("entropy_path")  # conftest.py: C kernels and torch path


P_VALUES = [0.0, 0.001, 0.01, 0.1, 0.25, 0.33, 0.5, 0.9, 0.999]
SMALL_V, LARGE_V = 50, 20_000  # below / above the size where the sampled selection takes over (20000 % 64 != 0)


def reference_clamped(logits: torch.Tensor, p: float, temperature: float = 1.0) -> torch.Tensor:
    """The definition (algos/entropy.py's reference_clamped_entropy, float64) every path is tested against."""
    return reference_clamped_entropy(logits, p, temperature)


def entropy_of(x: torch.Tensor) -> torch.Tensor:
    """The reference's ordinary entropy (p = 0) of float64 logits; -inf entries weigh 0."""
    return reference_clamped_entropy(x, 0.0)


def kept_lowest_index_first(x: torch.Tensor, drop: int) -> torch.Tensor:
    """Kept mask when the `drop` lowest are dropped and, among equal logits, higher indices go first."""
    vocab = x.shape[-1]
    order = torch.sort(x.flip(-1), dim=-1, stable=True).indices  # equal values: higher original index first
    dropped = (vocab - 1 - order)[..., :drop]
    return torch.ones_like(x, dtype=torch.bool).scatter(-1, dropped, False)


def assert_grad_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    """fp32 gradients p_i (mean - x_i) lose relative accuracy where x_i ~ mean: compare at the gradient's scale."""
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=max(1e-5 * float(ref.abs().max()), 1e-12))


def logits(*shape, seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("vocab", [SMALL_V, LARGE_V])
@pytest.mark.parametrize("p", P_VALUES)
def test_clamped_value_matches_reference_fp32(vocab, p):
    x = logits(12, vocab, seed=int(p * 1000) + vocab)
    got = clamped_entropy(x, p)
    assert got.dtype == torch.float32 and got.shape == (12,)
    torch.testing.assert_close(got.double(), reference_clamped(x, p), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("vocab", [SMALL_V, LARGE_V])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.33, 0.9])
def test_clamped_value_bf16_input(vocab, p):
    x = logits(10, vocab, seed=7, dtype=torch.bfloat16)  # bf16 values are heavily tied at V = 20000
    got = clamped_entropy(x, p)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference_clamped(x, p), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(SMALL_V,), (2, 3, SMALL_V), (2, 1, 3, LARGE_V), (0, 4, SMALL_V)])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_leading_shapes_and_temperature(shape, temperature):
    x = logits(*shape, seed=3)
    for p in (0.0, 0.33):
        got = clamped_entropy(x, p, temperature=temperature)
        assert got.shape == shape[:-1]
        torch.testing.assert_close(got.double(), reference_clamped(x, p, temperature), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_entropy_matches_reference(temperature):
    x = logits(3, 7, LARGE_V, seed=11)
    expected = entropy_of(x.double() / temperature)
    torch.testing.assert_close(full_entropy(x, temperature).double(), expected, rtol=1e-5, atol=2e-5)
    x64 = x.double()
    got64 = full_entropy(x64, temperature)
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, expected, rtol=1e-12, atol=1e-12)


def test_p_zero_is_exactly_full_entropy():
    x = logits(9, LARGE_V, seed=5)
    assert torch.equal(clamped_entropy(x, 0.0), full_entropy(x))
    assert torch.equal(clamped_entropy(x, 0.3 / LARGE_V), full_entropy(x))  # floor(p * V) == 0


@pytest.mark.parametrize("vocab", [SMALL_V, LARGE_V])
@pytest.mark.parametrize("p", [0.0, 0.05, 0.33, 0.8, 0.999])
def test_gradient_matches_reference_and_is_zero_on_dropped(vocab, p):
    x = logits(6, vocab, seed=vocab + int(100 * p)).requires_grad_(True)
    weights = torch.linspace(-1.0, 2.0, 6)  # mixed-sign upstream gradients, one of them zero-crossing
    (clamped_entropy(x, p, temperature=0.8) * weights).sum().backward()
    ref_x = x.detach().double().requires_grad_(True)
    (reference_clamped(ref_x, p, 0.8) * weights.double()).sum().backward()
    assert_grad_close(x.grad, ref_x.grad)
    drop = min(math.floor(p * vocab), vocab - 1)
    dropped = ~kept_lowest_index_first(x.detach(), drop)
    assert int(dropped.sum()) == 6 * drop
    assert torch.all(x.grad[dropped] == 0)  # exactly zero, not merely small
    if drop and vocab - drop > 1:  # a single kept token has zero entropy and zero gradient
        kept_grad = x.grad[~dropped & (weights != 0).unsqueeze(1).expand_as(dropped)]
        assert (kept_grad != 0).float().mean() > 0.99


def test_gradient_zero_upstream_gives_exact_zero_and_bf16_grad_dtype():
    x = logits(4, LARGE_V, seed=2, dtype=torch.bfloat16).requires_grad_(True)
    (clamped_entropy(x, 0.33) * torch.tensor([0.0, 1.0, 0.0, -1.0])).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert torch.all(x.grad[0] == 0) and torch.all(x.grad[2] == 0)
    assert torch.any(x.grad[1] != 0)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.75])
def test_gradcheck_float64(p):
    x = logits(3, 13, seed=21, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: clamped_entropy(t, p, temperature=1.3), (x,))
    assert torch.autograd.gradcheck(lambda t: clamped_entropy(t, p, chunk_rows=2), (x,))


@pytest.mark.parametrize("vocab", [SMALL_V, LARGE_V])
@pytest.mark.parametrize("p", [0.1, 0.33, 0.5, 0.9])
def test_heavy_ties_value_and_lowest_index_rule(vocab, p):
    g = torch.Generator().manual_seed(vocab)
    x = torch.randint(-3, 4, (5, vocab), generator=g).float().requires_grad_(True)  # 7 distinct values
    got = clamped_entropy(x, p)
    torch.testing.assert_close(got.double(), reference_clamped(x.detach(), p), rtol=1e-5, atol=2e-5)
    got.sum().backward()
    drop = min(math.floor(p * vocab), vocab - 1)
    keep = kept_lowest_index_first(x.detach(), drop)
    ref_x = x.detach().double().requires_grad_(True)
    entropy_of(ref_x.masked_fill(~keep, float("-inf"))).sum().backward()
    assert_grad_close(x.grad, ref_x.grad)
    for row in range(5):  # the kept ties are the lowest-index ones, and only they (rows keeping >1 value)
        if x[row][keep[row]].unique().numel() > 1:
            assert torch.equal(x.grad[row] != 0, keep[row])
        assert torch.all(x.grad[row][~keep[row]] == 0)


def test_extreme_logit_spread_is_still_exact():
    """Logits 200 nats below the maximum (their exp underflows) still give the right value and grads."""
    x = logits(4, LARGE_V, seed=8)
    x[:, ::7] -= 200.0
    x.requires_grad_(True)
    for p in (0.0, 0.1, 0.33):
        x.grad = None
        got = clamped_entropy(x, p)
        got.sum().backward()
        ref_x = x.detach().double().requires_grad_(True)
        ref = reference_clamped(ref_x, p)
        ref.sum().backward()
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=2e-5)
        assert_grad_close(x.grad, ref_x.grad)
        drop = min(math.floor(p * LARGE_V), LARGE_V - 1)
        assert torch.all(x.grad[~kept_lowest_index_first(x.detach(), drop)] == 0)


def test_chunking_does_not_change_results():
    x = logits(11, LARGE_V, seed=4)
    base = clamped_entropy(x, 0.33)
    for rows in (1, 3, 64):
        torch.testing.assert_close(clamped_entropy(x, 0.33, chunk_rows=rows), base, rtol=1e-6, atol=1e-6)


def test_invalid_arguments():
    x = logits(2, SMALL_V)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="p="):
            clamped_entropy(x, bad)
    with pytest.raises(ValueError, match="temperature"):
        full_entropy(x, temperature=0.0)


# ---- the sampled selection against the exact (kthvalue) one -------------------------------------------


def select_both(x: torch.Tensor, drop: int):
    """Kept masks from the fast selection and from the exact one, plus the fast path's statistics."""
    stats = {}
    scratch = torch.empty(3, *x.shape)
    fast = select.kept_threshold(x, drop, x.amax(-1, keepdim=True), scratch, stats)
    exact = select.exact_threshold(x, drop)
    index = torch.arange(x.shape[-1])
    masks = [(x > t[:, None]) | ((x == t[:, None]) & (index < c[:, None])) for t, c in (fast, exact)]
    return masks[0], masks[1], stats


@pytest.mark.parametrize("kind", ["gaussian", "heavy_tail", "bf16", "spiky"])
@pytest.mark.parametrize("p", [0.001, 0.05, 0.33, 0.67, 0.995])
def test_fast_selection_equals_exact(kind, p):
    g = torch.Generator().manual_seed(hash((kind, p)) % 2**31)
    x = torch.randn(16, LARGE_V, generator=g)
    if kind == "heavy_tail":
        x = torch.sinh(2 * x)
    elif kind == "bf16":
        x = (3 * x).bfloat16().float()
    elif kind == "spiky":
        x[:, :40] += 30.0
    drop = min(math.floor(p * LARGE_V), LARGE_V - 1)
    fast, exact, stats = select_both(x, drop)
    assert torch.equal(fast, exact)
    assert torch.all(fast.sum(-1) == LARGE_V - drop)
    kept_entropy = entropy_of(x.double().masked_fill(~fast, float("-inf")))  # the fast kept set, by the definition
    torch.testing.assert_close(kept_entropy, reference_clamped(x, p), rtol=1e-12, atol=1e-12)
    assert stats["gathered"] + stats["separator"] + stats["fallback"] == 16


def test_rows_that_defeat_the_sample_fall_back_to_exact():
    x = torch.randn(6, LARGE_V, generator=torch.Generator().manual_seed(1))
    positions = select.sample_positions(LARGE_V, x.device)
    x[:3, positions] += 40.0  # rows 0-2: every sampled logit sits far above the true threshold
    fast, exact, stats = select_both(x, math.floor(0.33 * LARGE_V))
    assert torch.equal(fast, exact)
    assert stats["fallback"] == 3


def test_missed_straddles_are_recounted(monkeypatch):
    monkeypatch.setattr(select, "_K_NOISE", 0.0)  # a zero margin: most straddles miss the threshold
    monkeypatch.setattr(select, "_K_BEND", 0.0)
    monkeypatch.setattr(select, "_K_CONST", 0.5)
    x = torch.sinh(2 * torch.randn(12, LARGE_V, generator=torch.Generator().manual_seed(2)))
    fast, exact, stats = select_both(x, math.floor(0.4 * LARGE_V))
    assert torch.equal(fast, exact)
    assert stats["recounted"] >= 6


def test_separator_rows_need_no_ranking():
    """When exactly `drop` logits lie below a tied value, the count at that value settles the row."""
    drop = math.floor(0.33 * LARGE_V)
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.full((4, drop), -1.0), torch.ones(4, LARGE_V - drop)], 1)
    x = x[:, torch.randperm(LARGE_V, generator=g)] + 0.0
    fast, exact, stats = select_both(x, drop)
    assert torch.equal(fast, exact) and torch.equal(fast, x > 0)
    assert stats["separator"] == 4


def test_accelerator_path_matches_on_cpu(monkeypatch):
    """GPUs take kthvalue and batched masks instead (no host round trips); run that path here too."""
    x = logits(5, LARGE_V, seed=9).requires_grad_(True)
    fast = clamped_entropy(x, 0.33)
    fast.sum().backward()
    fast_grad = x.grad.clone()
    monkeypatch.setattr(select, "on_cpu", lambda t: False)
    monkeypatch.setenv("AENT_NATIVE_ENTROPY", "0")  # the native kernels are CPU-only
    x.grad = None
    batched = clamped_entropy(x, 0.33)
    batched.sum().backward()
    torch.testing.assert_close(batched, fast, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, fast_grad, rtol=1e-4, atol=1e-5 * float(fast_grad.abs().max()))
    assert torch.equal(x.grad == 0, fast_grad == 0)
