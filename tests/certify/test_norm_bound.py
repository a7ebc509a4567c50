"""The norm bound ‖ĝ‖ ≤ M of the certified attribution holds for every finite input.

Reference: exact integer arithmetic. Every float64 (and float32) value is ``m·2^e`` with
``e ≥ −1074``, so ``v·2^1074`` is an integer and ``Σ v_i² ≤ M²`` is decided exactly.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from robustattr.attributions import Saliency
from robustattr.certify import BoundedAttribution, UniformSmoothingCertifier, bound_attribution

_SHIFT = 1074  # 2^1074 · (any float64) is an integer


def _int(v: float) -> int:
    n, d = float(v).as_integer_ratio()  # d is a power of two ≤ 2^1074
    return n * ((1 << _SHIFT) // d)


def exact_sq_norm(row: Tensor) -> int:
    """``Σ v_i² · 2^2148`` exactly (an integer)."""
    return sum(_int(v) ** 2 for v in row.double().tolist())


def exact_norm_ratio(row: Tensor, M: float) -> Fraction:
    """``‖row‖² / M²`` exactly."""
    return Fraction(exact_sq_norm(row), _int(M) ** 2)


def assert_bounded(out: Tensor, M: float) -> None:
    for b, row in enumerate(out.reshape(out.shape[0], -1)):
        r = exact_norm_ratio(row, M)
        assert r <= 1, f"row {b}: ‖ĝ‖/M = {math.sqrt(r)} > 1"


def _tol(dtype: torch.dtype, d: int) -> float:
    return 4 * torch.finfo(dtype).eps + 4 * (d + 8) * 2.0**-52


# ---------------------------------------------------------------------------------------
# the cases of the bug report
# ---------------------------------------------------------------------------------------


def _check_issue_case(x: Tensor, M: float, mode: str) -> None:
    out = bound_attribution(x, M, mode)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert_bounded(out, M)
    d = x[0].numel()
    for row_in, row in zip(x.flatten(1), out.flatten(1), strict=True):
        g_ratio = float(exact_norm_ratio(row_in, M))
        if mode == "normalize" or g_ratio > 1:
            assert float(exact_norm_ratio(row, M)) == pytest.approx(1.0, abs=2 * _tol(x.dtype, d))
        elif g_ratio < 1 - 4 * _tol(x.dtype, d):
            assert torch.equal(row, row_in)  # inside the ball: clip leaves g untouched


@pytest.mark.parametrize("mode", ["normalize", "clip"])
@pytest.mark.parametrize("M", [1.0, 2e-161])
def test_float64_entries_near_1e_162(mode: str, M: float) -> None:
    """A plain norm underflows (squares ≈ 1e-324): the old normalisation returned ‖ĝ‖ up to 1.7·M,
    and the old clip left g unclipped when M is of the order of ‖g‖."""
    g = torch.Generator().manual_seed(0)
    for d in (2, 16, 64, 784):
        x = torch.randn(8, d, generator=g, dtype=torch.float64) * 1e-162
        x[0] = (torch.rand(d, generator=g, dtype=torch.float64) + 1.0) * 1e-162  # all entries ≈ 1e-162
        _check_issue_case(x, M, mode)


@pytest.mark.parametrize("mode", ["normalize", "clip"])
@pytest.mark.parametrize("M", [1.0, 3e-20])
def test_float32_entries_near_1e_20(mode: str, M: float) -> None:
    """float32 squares of ≈1e-20 are subnormal (≈1e-40): the norm must still be exact enough."""
    g = torch.Generator().manual_seed(1)
    for scale in (1e-20, 1e-21, 1e-22, 1e-25, 1e-30):
        x = (torch.randn(6, 1, 8, 8, generator=g) * scale).float()
        _check_issue_case(x, M, mode)
    x = (torch.randn(6, 1, 8, 8, generator=g) * 1e-44).float()  # subnormal float32 entries
    _check_issue_case(x, 1.0, mode)


# ---------------------------------------------------------------------------------------
# seeded sweep over magnitudes, directions, M, dtypes and both modes
# ---------------------------------------------------------------------------------------


def _random_rows(gen: np.random.Generator, n: int, d: int, lo: float, hi: float, dtype: torch.dtype) -> Tensor:
    """Rows of 4 kinds: Gaussian, per-entry magnitudes spanning 30 decades, one big entry + tiny rest, constant."""
    rows = []
    for i in range(n):
        scale = 10.0 ** gen.uniform(lo, hi)
        kind = i % 4
        if kind == 0:
            v = gen.standard_normal(d) * scale
        elif kind == 1:
            v = np.sign(gen.standard_normal(d)) * 10.0 ** (np.log10(scale) - gen.uniform(0, 30, d))
        elif kind == 2:
            v = gen.standard_normal(d) * scale * 1e-12
            v[gen.integers(d)] = scale
        else:
            v = np.full(d, scale) * np.sign(gen.standard_normal())
        rows.append(v)
    a = np.asarray(rows)
    if dtype == torch.float32:
        with np.errstate(over="ignore", under="ignore"):
            a = a.astype(np.float32)
        a = np.nan_to_num(a, posinf=3e38, neginf=-3e38)
    return torch.from_numpy(a)


@pytest.mark.parametrize("dtype,lo,hi", [(torch.float64, -320.0, 300.0), (torch.float32, -45.0, 38.0)])
@pytest.mark.parametrize("mode", ["normalize", "clip"])
def test_sweep_of_magnitudes(dtype: torch.dtype, lo: float, hi: float, mode: str) -> None:
    gen = np.random.default_rng(12345)
    for d in (1, 2, 7, 64):
        x = _random_rows(gen, 48, d, lo, hi, dtype)
        assert x.dtype == dtype and torch.isfinite(x).all()
        for M in (1.0, 1e-3, 37.5, 1e6):
            out = bound_attribution(x, M, mode)
            assert out.dtype == dtype and out.shape == x.shape
            for row_in, row in zip(x, out, strict=True):
                r = exact_norm_ratio(row, M)
                assert r <= 1, f"d={d} M={M}: ‖ĝ‖/M = {math.sqrt(r)} > 1 for input max {row_in.abs().max()}"
                g_ratio = exact_norm_ratio(row_in, M)
                if mode == "normalize" and g_ratio > 0:
                    assert float(r) == pytest.approx(1.0, abs=2 * _tol(dtype, d)), (d, M, float(row_in.abs().max()))
                if mode == "clip":
                    if g_ratio <= (1 - 2 * _tol(dtype, d)) ** 2:
                        assert torch.equal(row, row_in)  # inside the ball: untouched
                    else:
                        assert float(r) == pytest.approx(1.0, abs=2 * _tol(dtype, d))
                if g_ratio > 0:  # direction preserved: ĝ = c·g with c > 0 (compared on scaled copies)
                    a, b = row_in.double() / row_in.double().abs().max(), row.double() / row.double().abs().max()
                    assert float(torch.dot(a, b) / (a.norm() * b.norm())) == pytest.approx(1.0, abs=1e-6)


def test_zero_and_exact_cases() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)
    n = bound_attribution(x, 2.0, "normalize")
    assert torch.equal(n[0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(n[1:], torch.tensor([[1.2, 1.6], [1.2, 1.6]], dtype=torch.float64), rtol=1e-12, atol=0)
    c = bound_attribution(x, 2.0, "clip")
    assert torch.equal(c[0], x[0]) and torch.equal(c[2], x[2])
    assert_bounded(torch.cat([n, c]), 2.0)


def test_gradient_is_that_of_the_formula() -> None:
    """Differentiable (attacks use ``create_graph``): the Jacobian equals that of M·g/‖g‖ / g·min(1, M/‖g‖)."""
    g = torch.Generator().manual_seed(3)
    for mode in ("normalize", "clip"):
        x = (torch.randn(3, 5, generator=g, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [5.0]], dtype=torch.float64)).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t, m=mode: bound_attribution(t, 2.0, m), (x,))
        ref = x * (2.0 / x.norm(dim=1, keepdim=True) if mode == "normalize" else torch.clamp(2.0 / x.norm(dim=1, keepdim=True), max=1.0))
        w = torch.randn(3, 5, generator=g, dtype=torch.float64)
        (ga,) = torch.autograd.grad((bound_attribution(x, 2.0, mode) * w).sum(), x)
        (gb,) = torch.autograd.grad((ref * w).sum(), x)
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_invalid_arguments() -> None:
    x = torch.ones(2, 4)
    with pytest.raises(ValueError, match="mode"):
        bound_attribution(x, 1.0, "tanh")
    for M in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="M"):
            bound_attribution(x, M)
    with pytest.raises(ValueError, match="M"):  # too small to be enforced in float32 (subnormal rounding)
        bound_attribution(x, 1e-40)
    with pytest.raises(ValueError, match="M"):  # ĝ would overflow float16
        bound_attribution(x.half(), 1e5)
    with pytest.raises(ValueError, match="floating"):
        bound_attribution(torch.ones(2, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------------
# end to end: a confident float64 softmax network
# ---------------------------------------------------------------------------------------


def _confident_softmax_net(d: int = 64, gap: float = 373.0, spread: float = 2.0) -> nn.Module:
    """float64 ``softmax(Wx + b)`` with ``p₀ ≈ 1 − 1e-162``: ∇p₀ = p₀p₁·w has entries 1e-162 … 1e-164."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        w = torch.randn(d, generator=g, dtype=torch.float64) * 10 ** (-spread * torch.rand(d, generator=g, dtype=torch.float64))
        lin.weight.zero_()
        lin.weight[1] = -w
        lin.bias.zero_()
        lin.bias[0] = gap
    return nn.Sequential(nn.Flatten(), lin, nn.Softmax(dim=1)).eval()


def test_confident_softmax_network_smoothed_norm_at_most_M() -> None:
    """The old normalisation gave ‖ĥ_N‖ = 1.51 > M = 1 on this network (and a certificate from it)."""
    model = _confident_softmax_net()
    x = torch.full((1, 1, 1, 64), 0.5, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.long)
    # every noisy ĝ is bounded, checked exactly
    z = x + 0.5 * (torch.rand(64, 1, 1, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5)
    z = z.clamp(0, 1)
    gz = Saliency()(model, z, y.repeat(64))
    assert (gz != 0).any() and gz.abs().max() < 1e-150  # the regime where a plain norm underflows
    assert_bounded(BoundedAttribution(Saliency())(model, z, y.repeat(64)), 1.0)
    for gap in (368.0, 371.0, 373.0, 375.0):
        cert = UniformSmoothingCertifier(radius=0.5, n_samples=100, eps_grid=[1e-3], margin="hoeffding").certify(_confident_softmax_net(gap=gap), x)
        assert float(cert.h_norm[0]) <= 1.0
