"""Worst-case attribution deviation bounds (F. Wang & A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations", CVPR 2023, arXiv:2303.00340), computed matrix-free.

For an attribution ``g: R^d → R^d`` (Saliency, InputXGradient, IntegratedGradients) of the
explained logit at ``x``, let ``J = ∂g/∂x ∈ R^{d×d}`` (per sample) and ``P = JᵀJ`` so that
``δᵀPδ = ‖Jδ‖²``. Under the local-linearity assumption ``g(x+δ) ≈ g(x) + Jδ``:

- ℓ2 ball:  ``‖g(x+δ) − g(x)‖₂ ≤ T_e = ξ_max·ε``, ``ξ_max = σ_max(J)`` (Theorem 1);
- ℓ∞ ball:  ``T_e = ε·min(sqrt(Σ_ij |P_ij|), √d·ξ_max)`` (Theorem 2 and Corollary 1);
- cosine:   if ``T_e ≤ ‖g(x)‖``, ``D_c = 1 − cos ≤ T_c = 1 − sqrt(1 − T_e²/‖g(x)‖²)`` (Eq. 10),
  otherwise the cosine bound is *vacuous*;
- generalised (Eq. 11): ``c = max{1, ‖g(x ± ε·v_max) − g(x)‖/(ξ_max·ε)}``, ``T'_e = c·T_e``.

These are **first-order (Taylor) estimates, not certificates**: the true deviation exceeds
``T_e`` wherever ``g`` is not linear on the ball (large ε, ReLU kinks, saturating logits).
``T'_e`` corrects for the curvature seen along ``±v_max`` only: it is a first-order estimate
too, and a perfect attacker exceeds it by O(ε²) (the protocol reports the largest relative
excess). ReLU networks have ``J = 0`` almost everywhere (saliency), so every quantity here is
computed on the smooth surrogate (:func:`robustattr.models.softplus_surrogate`: ReLU →
Softplus(β), max-pooling → log-mean-exp pooling unless ``smooth_pool=False``); a ReLU model
is swapped with a warning.

Every entry point (:func:`top_singular`, :func:`full_jacobian`, :func:`worst_case_bounds`)
runs the model in eval mode (BatchNorm uses running statistics, so J is block diagonal over
the batch and a sample's bound does not depend on its batch) and restores every submodule's
mode afterwards. The input contract is checked once per call: ``x`` finite with pixels in
[0, 1], ``y`` classes in ``[0, K)``, model output ``[B, K]`` and finite, attribution finite;
a violation raises ``ValueError`` naming the samples.

How the products are formed (never J itself): the attributions compute ``∇_x f_y`` with
``torch.autograd.grad`` internally, which does not compose with ``torch.func.jvp``/``vjp``
(functorch refuses ``requires_grad_`` inside a transform). We therefore use the
*double-vjp trick*: build ``g(x)`` once with ``create_graph=True``, then

- ``Jᵀu = ∂⟨g(x), u⟩/∂x`` (one reverse pass through the graph of ``g``), and
- ``Jv = ∂⟨Jᵀu, v⟩/∂u`` with a dummy ``u`` (``Jᵀu`` is linear in u, so this is exact).

Both graphs are retained, so each Lanczos step on ``JᵀJ`` costs two reverse passes and no
forward pass. Samples are independent (model in eval mode), so ``J`` is block diagonal over
the batch and one product serves all ``B`` samples, each with its own Krylov basis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustattr.models.activation import softplus_surrogate
from robustattr.utils import contract
from robustattr.utils.modes import eval_mode

AttributionFn = Callable[..., Tensor]

#: Default largest d for which a full Jacobian (and the ℓ∞ bound's P) may be formed.
FULL_JACOBIAN_LIMIT = 4096


@contextmanager
def _evaluation(model: nn.Module, x: Tensor, y: Tensor, check_range: bool = True) -> Iterator[None]:
    """An entry point: the input contract checked once (outermost call) and the model in eval mode.

    ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
    """
    with contract.range_option(check_range), contract.entry() as outer, eval_mode(model):
        if outer:
            contract.check_call(model, x, y)
        yield


def smooth_model(model: nn.Module, surrogate_beta: float = 10.0, smooth_pool: bool = True) -> nn.Module:
    """The network on which second-order quantities are computed.

    A model containing ``nn.ReLU`` has zero attribution Jacobian almost everywhere for
    saliency; it is replaced (with a ``UserWarning``) by its cached surrogate sharing the same
    weights: ``Softplus(surrogate_beta)`` and, with ``smooth_pool=True`` (default), every
    ``nn.MaxPool2d`` replaced by log-mean-exp pooling with the same β
    (:class:`robustattr.models.SmoothMaxPool2d`). Smooth models are returned as is. Max
    pooling that stays (``smooth_pool=False``, or 1-D/3-D pooling) triggers a ``UserWarning``:
    its gradient is discontinuous, so first-order bounds can be exceeded at any ε.
    """
    pools = (nn.MaxPool1d, nn.MaxPool3d) if smooth_pool else (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    if any(isinstance(m, pools) for m in model.modules()):
        warnings.warn(
            f"{type(model).__name__} uses max pooling that is not smoothed: its input gradient jumps where a "
            "window's argmax switches, so first-order bounds can be exceeded by attacks at any eps",
            UserWarning,
            stacklevel=3,
        )
    has_relu = any(isinstance(m, nn.ReLU) for m in model.modules())
    if has_relu:
        warnings.warn(
            f"{type(model).__name__} has ReLU activations (zero second derivatives); computing the "
            f"attribution Jacobian on its Softplus(beta={surrogate_beta}) surrogate",
            UserWarning,
            stacklevel=3,
        )
    if has_relu or (smooth_pool and any(isinstance(m, nn.MaxPool2d) for m in model.modules())):
        return softplus_surrogate(model, surrogate_beta, smooth_pool=smooth_pool)
    return model


class AttributionJacobian:
    """Matrix-free ``v ↦ Jv`` and ``u ↦ Jᵀu`` for ``J = ∂g/∂x`` at a batch ``x: [B, C, H, W]``.

    Builds ``g(x)`` once (``create_graph=True``) and the linear map ``u ↦ Jᵀu`` once; every
    product afterwards is one reverse pass over the retained graphs (double-vjp trick, see the
    module docstring). All vectors are flattened per sample: ``[B, d]``.

    Attributes:
        g: the attribution at x, detached, ``[B, d]``.
        shape: the per-sample shape ``(C, H, W)``.
    """

    def __init__(self, attribution: AttributionFn, model: nn.Module, x: Tensor, y: Tensor) -> None:
        self.shape = tuple(x.shape[1:])
        self.batch = x.shape[0]
        with torch.enable_grad():
            self._x = x.detach().clone().requires_grad_(True)
            g = attribution(model, self._x, y, create_graph=True)
            self._g = g.reshape(self.batch, -1)
            self._u = torch.zeros_like(self._g, requires_grad=True)
            if self._g.requires_grad:
                (jtu,) = torch.autograd.grad(
                    self._g, self._x, grad_outputs=self._u, create_graph=True, allow_unused=True, materialize_grads=True
                )
            else:
                jtu = torch.zeros_like(self._x)
            self._jtu = jtu.reshape(self.batch, -1)
        self.g = self._g.detach()

    def rmatvec(self, u: Tensor) -> Tensor:
        """``Jᵀu`` per sample: ``[B, d] → [B, d]``."""
        if not self._g.requires_grad:
            return torch.zeros_like(u)
        (out,) = torch.autograd.grad(
            self._g, self._x, grad_outputs=u.reshape_as(self._g), retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return out.reshape(self.batch, -1).detach()

    def matvec(self, v: Tensor) -> Tensor:
        """``Jv`` per sample: ``[B, d] → [B, d]`` (reverse pass of ``⟨Jᵀu, v⟩`` w.r.t. u)."""
        if not self._jtu.requires_grad:
            return torch.zeros_like(v)
        (out,) = torch.autograd.grad(
            self._jtu, self._u, grad_outputs=v.reshape_as(self._jtu), retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return out.detach()

    def gram_matvec(self, v: Tensor) -> Tensor:
        """``JᵀJv`` per sample: ``[B, d] → [B, d]``."""
        return self.rmatvec(self.matvec(v))


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """Remove the span of ``basis: [B, k, d]`` from ``w: [B, d]`` (classical Gram-Schmidt, twice)."""
    for _ in range(2):
        w = w - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", basis, w), basis)
    return w


def lanczos_top_eig(
    matvec: Callable[[Tensor], Tensor],
    start: Tensor,
    iters: int = 100,
    tol: float | None = 1e-5,
    check_every: int = 5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Largest eigenpair of symmetric PSD operators ``A_b`` (one per sample) by batched Lanczos.

    Lanczos with full re-orthogonalisation builds, per sample, ``Q_k = [q_1..q_k]`` and the
    tridiagonal ``T_k = Q_kᵀ A Q_k`` (``α_j`` diagonal, ``β_j`` off-diagonal); the top Ritz
    pair ``(θ, Q_k s)`` of ``T_k`` approximates ``(λ_max, v_max)``. Its residual is
    ``‖A v − θ v‖ = |β_k s_k|``. On breakdown (``β_j ≈ 0``: an invariant subspace, e.g. A = 0)
    the next vector is a fresh random vector orthogonal to ``Q_j`` and ``β_j = 0``.

    Args:
        matvec: ``[B, d] → [B, d]``, ``v ↦ A_b v_b`` for every sample.
        start: ``[B, d]`` start vectors (need not be normalised; must not be 0).
        iters: maximum Krylov dimension (capped at d).
        tol: stop when every sample's residual ≤ ``tol·θ`` (checked every ``check_every``
            steps: one host sync per check). ``None``: always run ``iters`` steps.
        check_every: steps between convergence checks.
        generator: for breakdown restart vectors.

    Returns:
        ``(lam_max [B], v_max [B, d] unit norm, residual [B])``.
    """
    B, d = start.shape
    k_max = min(iters, d)
    q = start / start.norm(dim=1, keepdim=True).clamp_min(torch.finfo(start.dtype).tiny)
    basis = torch.zeros(B, k_max, d, dtype=start.dtype, device=start.device)
    alphas = torch.zeros(B, k_max, dtype=torch.float64, device=start.device)
    betas = torch.zeros(B, k_max, dtype=torch.float64, device=start.device)
    scale = torch.zeros(B, dtype=start.dtype, device=start.device)
    k = 0
    theta = torch.zeros(B, dtype=torch.float64, device=start.device)
    s_top = torch.zeros(B, 1, dtype=torch.float64, device=start.device)
    for j in range(k_max):
        basis[:, j] = q
        w = matvec(q)
        alpha = (w * q).sum(dim=1)
        alphas[:, j] = alpha.to(torch.float64)
        scale = torch.maximum(scale, w.norm(dim=1))
        w = _orthogonalize(w, basis[:, : j + 1])
        beta = w.norm(dim=1)
        k = j + 1
        if j + 1 < k_max:
            # Breakdown: β tiny relative to ‖A‖ estimate → restart with a random orthogonal vector.
            broken = beta <= 1e-7 * scale.clamp_min(torch.finfo(start.dtype).tiny)
            r = torch.randn(B, d, generator=generator, dtype=start.dtype, device=start.device)
            r = _orthogonalize(r, basis[:, : j + 1])
            r = r / r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(start.dtype).tiny)
            q = torch.where(broken[:, None], r, w / beta.clamp_min(torch.finfo(start.dtype).tiny)[:, None])
            beta = torch.where(broken, torch.zeros_like(beta), beta)
        betas[:, j] = beta.to(torch.float64)
        if tol is not None and (k % check_every == 0 or k == k_max):
            theta, s_top, res = _ritz_top(alphas[:, :k], betas[:, :k])
            if bool((res <= tol * theta.abs().clamp_min(1e-300)).all()):
                break
    theta, s_top, res = _ritz_top(alphas[:, :k], betas[:, :k])
    v = torch.einsum("bk,bkd->bd", s_top.to(start.dtype), basis[:, :k])
    v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(start.dtype).tiny)
    return theta.clamp_min(0).to(start.dtype), v, res.to(start.dtype)


def _ritz_top(alphas: Tensor, betas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Top eigenpair of the ``[B, k, k]`` tridiagonal T and the Lanczos residual ``|β_k s_k|``."""
    k = alphas.shape[1]
    T = torch.diag_embed(alphas)
    if k > 1:
        off = betas[:, : k - 1]
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    evals, evecs = torch.linalg.eigh(T)
    s = evecs[:, :, -1]
    return evals[:, -1], s, (betas[:, -1] * s[:, -1]).abs()


def _check_common(iters: int, tol: float | None) -> None:
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be > 0 or None, got {tol}")


def _singular_from_operator(
    op: AttributionJacobian, iters: int, tol: float | None, generator: torch.Generator | None, start: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(ξ_max [B], v_max [B, d])`` of the operator's J by Lanczos on ``JᵀJ``."""
    contract.check_finite(op.g, "attribution")
    B = op.batch
    d = op.g.shape[1]
    if start is None:
        start = torch.randn(B, d, generator=generator, dtype=op.g.dtype, device=op.g.device)
    else:
        start = start.reshape(B, d).to(op.g.dtype)
    lam, v, _ = lanczos_top_eig(op.gram_matvec, start, iters=iters, tol=tol, generator=generator)
    return lam.sqrt(), v


def top_singular(
    attribution: AttributionFn,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    iters: int = 100,
    tol: float | None = 1e-5,
    surrogate_beta: float = 10.0,
    generator: torch.Generator | None = None,
    start: Tensor | None = None,
    smooth_pool: bool = True,
    *,
    check_range: bool = True,
) -> tuple[Tensor, Tensor]:
    """Top singular value ``ξ_max = σ_max(∂g/∂x)`` and right singular vector per sample.

    Batched Lanczos on ``JᵀJ`` with matrix-free products (double-vjp trick; J is never
    formed). Cost per Lanczos step: two reverse passes through the retained double-backward
    graph of the attribution (for IG, of its m path points), for all B samples at once.

    Args:
        attribution: e.g. ``Saliency()``, ``InputXGradient()``, ``IntegratedGradients()``.
        model: network taking ``[B, C, H, W]``; ReLU models are swapped for the softplus surrogate.
        x: ``[B, C, H, W]`` inputs; y: ``[B]`` explained classes.
        iters: maximum Lanczos steps (Krylov dimension, capped at d).
        tol: relative residual tolerance on ``ξ_max²`` (``None``: run all ``iters``).
        surrogate_beta: β of the softplus surrogate used for ReLU models.
        generator: random start vector and breakdown restarts.
        start: optional start vectors shaped like x (e.g. per-sample seeded noise).
        smooth_pool: the surrogate also replaces max-pooling by log-mean-exp pooling (default True).
        check_range: ``False`` lets pixels outside [0, 1] through the input check.

    Returns:
        ``(xi_max [B], v_max [B, C, H, W])``; ``v_max`` has unit ℓ2 norm, sign arbitrary.

    Runs in eval mode (modes restored); ``ValueError`` on a contract violation (module docstring).
    """
    _check_common(iters, tol)
    with _evaluation(model, x, y, check_range):
        model = smooth_model(model, surrogate_beta, smooth_pool)
        op = AttributionJacobian(attribution, model, x, y)
        xi, v = _singular_from_operator(op, iters, tol, generator, start)
    return xi, v.reshape(x.shape)


def full_jacobian(
    attribution: AttributionFn,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    chunk_size: int = 64,
    max_dim: int = FULL_JACOBIAN_LIMIT,
    surrogate_beta: float = 10.0,
    smooth_pool: bool = True,
    *,
    check_range: bool = True,
) -> Tensor:
    """Full attribution Jacobian ``J[b, i, j] = ∂g_i(x_b)/∂x_{b,j}``: ``[B, d, d]``.

    Row i is ``Jᵀe_i``; ``chunk_size`` rows are computed per pass by replicating the batch
    ``chunk_size`` times and back-propagating one-hot cotangents (``⌈d/chunk⌉`` passes, each
    a forward and double backward on ``chunk_size·B`` inputs). For references and the ℓ∞
    bound only; memory ``B·d²`` floats.

    Runs in eval mode (modes restored); the surrogate smooths max-pooling unless
    ``smooth_pool=False``. ``check_range=False`` lets pixels outside [0, 1] through the input check.

    Raises:
        ValueError: if ``d > max_dim`` (use :func:`top_singular` instead), ``chunk_size < 1`` or
            the input contract is violated (module docstring).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B = x.shape[0]
    d = x[0].numel()
    if d > max_dim:
        raise ValueError(
            f"full_jacobian: d={d} exceeds max_dim={max_dim} (the Jacobian would hold {B}x{d}x{d} floats); "
            "use top_singular (matrix-free Lanczos) or raise max_dim explicitly"
        )
    with _evaluation(model, x, y, check_range):
        model = smooth_model(model, surrogate_beta, smooth_pool)
        rows = []
        for i0 in range(0, d, chunk_size):
            c = min(chunk_size, d - i0)
            with torch.enable_grad():
                xr = x.detach().repeat(c, *([1] * (x.dim() - 1))).requires_grad_(True)  # row n = k·B + b
                g = attribution(model, xr, y.repeat(c), create_graph=True).reshape(c * B, d)
                if i0 == 0:  # every chunk holds all B samples: one check covers them
                    contract.check_finite(g.detach()[:B], "attribution")
                cot = torch.zeros(c, B, d, dtype=x.dtype, device=x.device)
                idx = torch.arange(c, device=x.device)
                cot[idx, :, i0 + idx] = 1.0
                if g.requires_grad:
                    (r,) = torch.autograd.grad(g, xr, grad_outputs=cot.reshape(c * B, d), allow_unused=True, materialize_grads=True)
                else:
                    r = torch.zeros_like(xr)
            rows.append(r.detach().reshape(c, B, d).transpose(0, 1))  # [B, c, d]
    return torch.cat(rows, dim=1)


def linf_sum_abs_gram(J: Tensor, chunk_size: int = 512) -> Tensor:
    """``Σ_ij |P_ij|`` with ``P = JᵀJ`` per sample, P formed ``chunk_size`` rows at a time: ``[B, d, d] → [B]``."""
    d = J.shape[-1]
    total = torch.zeros(J.shape[0], dtype=J.dtype, device=J.device)
    for i0 in range(0, d, chunk_size):
        total = total + (J[:, :, i0 : i0 + chunk_size].transpose(1, 2) @ J).abs().sum(dim=(1, 2))
    return total


@dataclass(frozen=True)
class WorstCaseBounds:
    """Per-sample first-order worst-case deviation estimates (Wang & Kong, CVPR 2023) for one ε and norm.

    All tensors have leading dimension B. Not certificates: see the module docstring.

    Attributes:
        eps: perturbation budget ε (pixel space).
        norm: ``"l2"`` or ``"linf"``.
        xi_max: ``σ_max(J)`` ``[B]``.
        v_max: top right singular vector ``[B, C, H, W]`` (unit ℓ2 norm).
        g_norm: ``‖g(x)‖₂`` ``[B]``.
        T_e: Euclidean bound ``[B]`` (ℓ2: ``ξ_max ε``; ℓ∞: ``ε·min(sqrt(Σ|P_ij|), √d ξ_max)``).
        sum_abs_P: ``Σ_ij |P_ij|`` for ℓ∞ when computed, else NaN ``[B]``.
        T_c: cosine-distance bound ``1 − sqrt(1 − T_e²/‖g‖²)`` ``[B]``; NaN where vacuous.
        T_c_deg: the same as an angle ``arccos(1 − T_c)`` in degrees ``[B]``; NaN where vacuous.
        vacuous: ``T_e > ‖g(x)‖`` (no cosine statement possible) ``[B]`` bool.
        c: Eq. 11 factor ``max{1, max_± ‖g(x ± ε v_max) − g(x)‖/(ξ_max ε)}`` ``[B]``.
        T_e_prime: generalised bound ``c·T_e`` ``[B]``.
        probe_dev: ``max_± ‖g(x ± ε v_max) − g(x)‖`` ``[B]``.
        label_kept_pos / label_kept_neg: the model still predicts y at ``x ± ε v_max`` ``[B]`` bool.
    """

    eps: float
    norm: str
    xi_max: Tensor
    v_max: Tensor
    g_norm: Tensor
    T_e: Tensor
    sum_abs_P: Tensor
    T_c: Tensor
    T_c_deg: Tensor
    vacuous: Tensor
    c: Tensor
    T_e_prime: Tensor
    probe_dev: Tensor
    label_kept_pos: Tensor
    label_kept_neg: Tensor

    def eps_max_cosine(self, tau: float) -> Tensor:
        """Largest ℓ2 ε whose first-order cosine bound keeps ``cos ≥ τ``: ``‖g‖·sqrt(1−τ²)/ξ_max`` ``[B]``."""
        if not -1.0 <= tau < 1.0:
            raise ValueError(f"tau must be in [-1, 1), got {tau}")
        tau_eff = max(tau, 0.0)  # Eq. 10 needs T_e ≤ ‖g‖, i.e. cos ≥ 0
        return self.g_norm * math.sqrt(1.0 - tau_eff**2) / self.xi_max

    def eps_max_euclidean(self, kappa: float) -> Tensor:
        """Largest ℓ2 ε with ``T_e = ξ_max ε ≤ κ``: ``κ/ξ_max`` ``[B]``."""
        if not kappa > 0:
            raise ValueError(f"kappa must be > 0, got {kappa}")
        return kappa / self.xi_max

    def as_dict(self) -> dict[str, Tensor]:
        """Per-sample tensors by name (``v_max`` excluded)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, Tensor) and k != "v_max"}


def cosine_bound(T_e: Tensor, g_norm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 10: ``T_c = 1 − sqrt(1 − T_e²/‖g‖²)`` and its angle in degrees, NaN where ``T_e > ‖g‖``.

    Returns ``(T_c [B], T_c_deg [B], vacuous [B] bool)``.
    """
    vacuous = T_e > g_norm
    ratio = (T_e / g_norm.clamp_min(torch.finfo(g_norm.dtype).tiny)).clamp(max=1.0)
    cos_lower = torch.sqrt(1.0 - ratio**2)
    nan = torch.full_like(T_e, float("nan"))
    T_c = torch.where(vacuous, nan, 1.0 - cos_lower)
    T_c_deg = torch.where(vacuous, nan, torch.rad2deg(torch.arccos(cos_lower.clamp(-1.0, 1.0))))
    return T_c, T_c_deg, vacuous


def worst_case_bounds(
    attribution: AttributionFn,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "l2",
    iters: int = 100,
    tol: float | None = 1e-5,
    surrogate_beta: float = 10.0,
    full_jacobian_limit: int = FULL_JACOBIAN_LIMIT,
    generator: torch.Generator | None = None,
    start: Tensor | None = None,
    singular: tuple[Tensor, Tensor] | None = None,
    smooth_pool: bool = True,
    *,
    check_range: bool = True,
) -> WorstCaseBounds:
    """All worst-case bounds of Wang & Kong (CVPR 2023, arXiv:2303.00340) for ``x: [B, C, H, W]``, ``y: [B]`` at budget ε in ``norm``.

    ``ξ_max`` by Lanczos (:func:`top_singular`); for ``norm="linf"`` also ``Σ|P_ij|`` from the
    full Jacobian when ``d ≤ full_jacobian_limit`` (else only ``√d·ξ_max``, with a warning).
    The Eq. 11 probe evaluates the attribution (on the surrogate) at ``x ± ε v_max`` (not
    clipped to [0,1]); the label check uses ``model`` as given (the original network).
    ``singular=(xi_max [B], v_max)`` reuses a previous :func:`top_singular` result (e.g. to
    evaluate several norms or ε without repeating Lanczos). ``smooth_pool``: the surrogate also
    replaces max-pooling by log-mean-exp pooling (default True). Runs the model in eval mode
    (every submodule's mode restored). ``check_range=False`` lets pixels outside [0, 1] through
    the input check (:func:`robustattr.utils.contract.range_option`).

    ``T_e`` and ``T'_e`` are first-order estimates: a perfect attacker exceeds ``T'_e`` by O(ε²).

    Raises:
        ValueError: ``eps <= 0``, ``iters < 1``, unknown ``norm``, or the input contract is
            violated (``x`` finite in [0, 1], ``y`` in ``[0, K)``, model output ``[B, K]``, finite
            attributions), naming the samples.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    _check_common(iters, tol)
    with _evaluation(model, x, y, check_range):
        smooth = smooth_model(model, surrogate_beta, smooth_pool)
        if singular is None:
            op = AttributionJacobian(attribution, smooth, x, y)
            xi, v = _singular_from_operator(op, iters, tol, generator, start)
            g = op.g
            del op  # free the retained double-backward graph
        else:
            xi, v = singular[0].detach(), singular[1].detach().reshape(x.shape[0], -1)
            g = attribution(smooth, x.detach(), y).detach().reshape(x.shape[0], -1)
            contract.check_finite(g, "attribution")
        B, d = g.shape
        g_norm = g.norm(dim=1)
        sum_abs = torch.full_like(xi, float("nan"))
        if norm == "l2":
            T_e = xi * eps
        else:
            T_e = eps * math.sqrt(d) * xi
            if d <= full_jacobian_limit:
                J = full_jacobian(attribution, smooth, x, y, max_dim=full_jacobian_limit, smooth_pool=smooth_pool)
                sum_abs = linf_sum_abs_gram(J)
                T_e = torch.minimum(T_e, eps * sum_abs.sqrt())
            else:
                warnings.warn(
                    f"d={d} > full_jacobian_limit={full_jacobian_limit}: the l_inf bound uses sqrt(d)*xi_max only",
                    UserWarning,
                    stacklevel=2,
                )
        T_c, T_c_deg, vacuous = cosine_bound(T_e, g_norm)
        v_img = v.reshape(x.shape)
        x_probe = torch.cat([x.detach() + eps * v_img, x.detach() - eps * v_img])
        y_probe = torch.cat([y, y])
        g_probe = attribution(smooth, x_probe, y_probe).detach().reshape(2, B, d)
        contract.check_finite(g_probe.transpose(0, 1), "attribution at x ± eps·v_max")
        dev = (g_probe - g.unsqueeze(0)).norm(dim=2).amax(dim=0)
        c = torch.clamp(dev / (xi * eps).clamp_min(torch.finfo(xi.dtype).tiny), min=1.0)
        with torch.no_grad():
            pred = model(x_probe).argmax(dim=1).reshape(2, B)
        return WorstCaseBounds(
            eps=float(eps),
            norm=norm,
            xi_max=xi,
            v_max=v_img,
            g_norm=g_norm,
            T_e=T_e,
            sum_abs_P=sum_abs,
            T_c=T_c,
            T_c_deg=T_c_deg,
            vacuous=vacuous,
            c=c,
            T_e_prime=c * T_e,
            probe_dev=dev,
            label_kept_pos=pred[0] == y,
            label_kept_neg=pred[1] == y,
        )
