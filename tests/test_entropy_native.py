"""The fused C entropy kernels (aent_cli/algos/entropy_native.py) beyond the shared reference tests
in test_entropy.py: the sampled selection at LLM vocabulary sizes, the narrowing rounds, rows built
to defeat the sample, threads, bf16 rounding, and the torch fallback when they cannot be built."""
import math

import pytest
import torch

from aent_cli.algos import entropy as ent
from aent_cli.algos import entropy_select as select
from aent_cli.algos import entropy_native as native
from aent_cli.algos.entropy import clamped_entropy
from aent_cli.algos.entropy import reference_clamped_entropy as reference_clamped
from tests.test_entropy import assert_grad_close, kept_lowest_index_first, logits

SAMPLED_V = 70_001  # above 4 * SMALL_BAND: the sampled selection runs (and V % 16 != 0)

pytestmark = pytest.mark.skipif(native.kernels() is None, reason="no C compiler: native kernels not built")


def native_kept(x: torch.Tensor, drop: int, stats=None) -> torch.Tensor:
    _, _, _, thr, cut = native.forward(x, drop, 1.0, select.sample_positions(x.shape[1], x.device), stats=stats)
    index = torch.arange(x.shape[1])
    return (x > thr[:, None]) | ((x == thr[:, None]) & (index < cut[:, None]))


def exact_kept(x: torch.Tensor, drop: int) -> torch.Tensor:
    thr, cut = select.exact_threshold(x, drop)
    index = torch.arange(x.shape[1])
    return (x > thr[:, None]) | ((x == thr[:, None]) & (index < cut[:, None]))


@pytest.mark.parametrize("p", [0.001, 0.05, 0.33, 0.67, 0.995])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sampled_selection_value_and_gradient(p, dtype):
    x = logits(6, SAMPLED_V, seed=int(1000 * p), dtype=dtype).requires_grad_(True)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.0, 1.0, -1.0])
    stats = {}
    got = ent._apply(x, lambda v: ent.num_dropped(v, p), 0.9, None, stats)
    torch.testing.assert_close(got.double(), reference_clamped(x.detach(), p, 0.9), rtol=1e-5, atol=2e-5)
    assert stats["sampled_rows"] == 6
    (got * weights).sum().backward()
    ref_x = x.detach().double().requires_grad_(True)
    (reference_clamped(ref_x, p, 0.9) * weights.double()).sum().backward()
    drop = ent.num_dropped(SAMPLED_V, p)
    assert torch.all(x.grad[~kept_lowest_index_first(x.detach(), drop)] == 0)
    if dtype == torch.float32:
        assert_grad_close(x.grad, ref_x.grad)


@pytest.mark.parametrize("kind", ["gaussian", "heavy_tail", "bf16_ties", "spiky", "integer_ties"])
@pytest.mark.parametrize("small_band", [16, 4096])
def test_kept_set_equals_kthvalue_through_narrowing_rounds(kind, small_band, monkeypatch):
    """A small band forces the value-spaced narrowing rounds (and, with ties, their no-progress exit)."""
    monkeypatch.setattr(native, "SMALL_BAND", small_band)
    g = torch.Generator().manual_seed(len(kind) * 7 + small_band)
    x = torch.randn(8, SAMPLED_V, generator=g)
    x = {"heavy_tail": torch.sinh(2 * x), "bf16_ties": (3 * x).bfloat16().float(),
         "integer_ties": torch.round(2 * x), "spiky": x.index_fill(1, torch.arange(40), 30.0)}.get(kind, x)
    for p in (0.01, 0.33, 0.9):
        drop = ent.num_dropped(SAMPLED_V, p)
        stats = {}
        kept = native_kept(x, drop, stats)
        assert torch.equal(kept, exact_kept(x, drop)), (kind, p)
        assert torch.all(kept.sum(-1) == SAMPLED_V - drop)
        if small_band == 16 and kind in ("gaussian", "heavy_tail"):
            assert stats["count_passes"] > 8  # the first pass rarely isolates <= 16 tokens


def test_rows_that_defeat_the_sample_are_still_exact():
    x = torch.randn(4, SAMPLED_V, generator=torch.Generator().manual_seed(1))
    x[:2, select.sample_positions(SAMPLED_V, x.device)] += 40.0  # every sampled logit far above the threshold
    x[2, select.sample_positions(SAMPLED_V, x.device)] -= 40.0  # or far below it
    drop = math.floor(0.33 * SAMPLED_V)
    stats = {}
    assert torch.equal(native_kept(x, drop, stats), exact_kept(x, drop))
    assert stats["count_passes"] > 4  # the rows whose sample lied needed narrowing


def test_a_value_tied_at_the_threshold_on_both_sides():
    """Exactly `drop` logits below one tied value, and a tie straddling the cut: lowest indices kept."""
    drop = math.floor(0.33 * SAMPLED_V)
    g = torch.Generator().manual_seed(3)
    separator = torch.cat([torch.full((drop,), -1.0), torch.ones(SAMPLED_V - drop)])[torch.randperm(SAMPLED_V, generator=g)]
    straddle = torch.cat([torch.full((drop - 5,), -2.0), torch.zeros(10), torch.ones(SAMPLED_V - drop - 5)])
    x = torch.stack([separator, straddle[torch.randperm(SAMPLED_V, generator=g)]])
    kept = native_kept(x, drop)
    assert torch.equal(kept, exact_kept(x, drop)) and torch.equal(kept[0], x[0] > 0)
    zeros = (x[1] == 0).nonzero().squeeze(1)
    assert torch.equal(kept[1][zeros], torch.tensor([True] * 5 + [False] * 5))  # the 5 highest-index ties dropped


def test_results_do_not_depend_on_the_thread_count():
    x = logits(13, SAMPLED_V, seed=4).requires_grad_(True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            x.grad = None
            out = clamped_entropy(x, 0.33)
            out.sum().backward()
            results.append((out.detach(), x.grad.clone()))
    finally:
        torch.set_num_threads(before)
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(grad, results[0][1])


def test_bf16_gradient_is_the_fp32_gradient_rounded_to_nearest_even():
    x = logits(5, 1003, seed=6, dtype=torch.bfloat16)
    leaf16, leaf32 = x.clone().requires_grad_(True), x.float().requires_grad_(True)
    clamped_entropy(leaf16, 0.33).sum().backward()
    clamped_entropy(leaf32, 0.33).sum().backward()
    assert leaf16.grad.dtype == torch.bfloat16
    assert torch.equal(leaf16.grad, leaf32.grad.bfloat16())


def test_matches_the_torch_path_kept_set_and_values(monkeypatch):
    x = logits(7, SAMPLED_V, seed=8, scale=2.0).requires_grad_(True)
    out = {}
    for path in ("1", "0"):
        monkeypatch.setenv("AENT_NATIVE_ENTROPY", path)
        x.grad = None
        value = clamped_entropy(x, 0.33, temperature=0.7)
        value.sum().backward()
        out[path] = (value.detach(), x.grad.clone())
    torch.testing.assert_close(out["1"][0], out["0"][0], rtol=2e-6, atol=2e-5)
    assert torch.equal(out["1"][1] == 0, out["0"][1] == 0)


def test_without_a_compiler_the_torch_path_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("AENT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native.kernels() is None
    x = logits(3, 500, seed=9)
    assert not native.supports(x)
    torch.testing.assert_close(clamped_entropy(x, 0.33).double(), reference_clamped(x, 0.33), rtol=1e-5, atol=2e-5)


def test_the_kernel_is_built_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("AENT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    assert native.kernels() is not None
    built = list((tmp_path / "kernels").glob("entropy-*.so"))
    assert len(built) == 1
    monkeypatch.setattr(native, "_state", {})
    stamp = built[0].stat().st_mtime_ns
    assert native.kernels() is not None
    assert built[0].stat().st_mtime_ns == stamp and len(list((tmp_path / "kernels").iterdir())) == 1


def test_an_unwritable_cache_falls_back_to_the_torch_path(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the cache root is a file: nothing can be created under it
    monkeypatch.setenv("AENT_CACHE_DIR", str(blocker))
    monkeypatch.setattr(native, "_state", {})
    assert native.kernels() is None
    x = logits(2, 300, seed=10)
    torch.testing.assert_close(clamped_entropy(x, 0.5).double(), reference_clamped(x, 0.5), rtol=1e-5, atol=2e-5)
