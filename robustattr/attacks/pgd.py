"""Projected gradient ascent (Madry et al. 2018) in ℓ∞ / ℓ2 balls ∩ [0,1], and PGD on the CE.

The projected-ascent core (:func:`projected_ascent`) is shared by every inner
maximisation of the robust losses (PGD-AT, TRADES, IG-NORM, ART, IGR): the caller
supplies a per-sample objective ``φ(z) -> [B]`` and the core does

``z ← Π_{B_p(x, ε) ∩ [0,1]}( z + α · s(∇_z Σ_i φ_i(z)) )``,

with ``s(g) = sign(g)`` for ℓ∞ and ``s(g) = g / ‖g‖₂`` (per sample) for ℓ2. Because the
objective is a sum of per-sample terms, one backward gives every sample's gradient.

Random starts. ``noise_seed=None`` draws from the global RNG (``torch.rand_like``-style,
fast). ``noise_seed=s`` draws each sample's noise from its own generator seeded by
``s + key(x_i)``, where ``key`` is a deterministic integer hash of the sample's pixels
(:func:`sample_keys`): the noise a sample receives then does not depend on the batch it
sits in, on its position, or on how the batch is sharded across DDP ranks (this is what
makes the 1-process vs 2-process gradient test exact). It costs one host sync and B
small generator calls per draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attributions.base import ensure_grad_mode
from robustattr.attributions.smoothing import sample_gaussian, sample_l2_ball, sample_linf_cube
from robustattr.registry import register
from robustattr.utils import contract
from robustattr.utils.modes import eval_mode
from robustattr.utils.rng import per_sample_noise

NORMS = ("linf", "l2")
_START_KINDS = ("linf", "l2", "gaussian")


# ----------------------------------------------------------------------------- validation
def check_norm(norm: str) -> str:
    """Return ``norm`` if it is ``"linf"`` or ``"l2"``, else raise ``ValueError`` naming ``norm``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_nonnegative(name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value >= 0``."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


class PositiveParameter:
    """Descriptor for a settable budget parameter (ε, step size α) that must stay ``> 0``.

    Assigning a non-positive value raises ``ValueError`` naming the parameter, both in
    ``__init__`` and later (e.g. when a warm-up schedule ramps ε during training, as in the
    curriculum of Cai et al. 2018, arXiv:1805.04807, or the ε ramp of Gowal et al. 2018,
    arXiv:1810.12715). With ``forward_to="inner"`` the value lives on ``self.inner.<name>``
    (objectives that delegate their inner maximisation), so one assignment updates the
    attack that reads it.
    """

    def __init__(self, forward_to: str | None = None) -> None:
        self.forward_to = forward_to

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, f"_{name}"

    def __get__(self, obj: object, objtype: type | None = None) -> float:
        if obj is None:
            return self  # type: ignore[return-value]
        if self.forward_to is not None:
            return getattr(getattr(obj, self.forward_to), self.name)
        return getattr(obj, self.slot)

    def __set__(self, obj: object, value: float) -> None:
        if self.forward_to is not None:
            setattr(getattr(obj, self.forward_to), self.name, value)
            return
        check_positive(self.name, value)
        setattr(obj, self.slot, value)


def check_count(name: str, value: int, minimum: int = 1) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer ``>= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ----------------------------------------------------------------------------- noise
def sample_keys(x: Tensor) -> Tensor:
    """A deterministic integer key per sample: ``[B, ...] → [B]`` int64 in ``[0, 2³¹−1)``.

    ``key_i = (Σ_j (j+1) · round(65535·x_ij)) mod (2³¹−1)``: a function of the sample's pixels
    only (quantised to 16 bits), identical on every device and for every batch split.
    """
    q = (x.detach().flatten(1).to(torch.float64) * 65535.0).round().to(torch.int64)
    w = torch.arange(1, q.shape[1] + 1, device=x.device, dtype=torch.int64)
    return (q * w).sum(dim=1) % (2**31 - 1)


def draw_noise(x: Tensor, kind: str, scale: float, noise_seed: int | None = None) -> Tensor:
    """Noise shaped like ``x: [B, C, H, W]``: per sample uniform in the ℓ∞ cube / ℓ2 ball of radius
    ``scale`` (``kind="linf"|"l2"``), or ``N(0, scale² I)`` (``kind="gaussian"``).

    ``noise_seed=None``: global RNG. ``noise_seed=s``: sample i uses ``Generator(s + key(x_i))``
    (:func:`sample_keys`), so the draw is independent of batching and DDP sharding.
    """
    if kind not in _START_KINDS:
        raise ValueError(f"kind must be one of {_START_KINDS}, got {kind!r}")
    sampler = {"linf": sample_linf_cube, "l2": sample_l2_ball, "gaussian": sample_gaussian}[kind]
    shape = tuple(x.shape[1:])
    if noise_seed is None:
        return sampler(x.shape[0], shape, scale, None, x.device, x.dtype)
    seeds = (sample_keys(x) + int(noise_seed)).tolist()  # one host sync per draw (opt-in mode)
    arg = {"sigma": scale} if kind == "gaussian" else {"radius": scale}
    return per_sample_noise(sampler, seeds, 1, shape, x.device, x.dtype, **arg)[0]


# ----------------------------------------------------------------------------- projection / step
def project(z: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """``Π_{B_p(x, ε) ∩ [0,1]}(z)`` for ``z, x: [B, C, H, W]`` (x assumed in [0,1]).

    ℓ∞: clamp ``z − x`` to ``[−ε, ε]`` then to the box (exact projection, coordinate-wise).
    ℓ2: rescale ``δ = z − x`` to ``‖δ‖₂ ≤ ε`` then clamp to the box; clamping moves every
    coordinate towards ``x`` (since ``x ∈ [0,1]``), so the result stays in the ball.
    """
    delta = z - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * (eps / n).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction: ``sign(g)`` (ℓ∞) or ``g / ‖g‖₂`` per sample (ℓ2); ``[B, ...]``."""
    if norm == "linf":
        return grad.sign()
    n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return grad / n


def projected_ascent(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    start: Tensor,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
) -> Tensor:
    """Maximise ``Σ_i objective(z)_i`` over ``z ∈ B_p(x, ε) ∩ [0,1]`` by ``steps`` projected steps.

    Args:
        objective: ``z: [B, C, H, W] (requires grad) → [B]`` per-sample values; it must be
            a sum of per-sample terms (sample i only depends on ``z_i``).
        x: centre of the ball ``[B, C, H, W]``.
        start: initial point (projected first).
        eps, step_size, steps, norm: the budget ε, step α, number of steps, ``"linf"|"l2"``.

    Returns:
        The last iterate, detached, in ``B_p(x, ε) ∩ [0,1]``.

    Raises:
        ValueError: called on its own (not inside another entry point), ``x`` is not finite in [0, 1].
    """
    ensure_grad_mode()  # a clear error under Lightning's inference mode
    with contract.entry() as outer:
        if outer:
            contract.check_images(x)
        x = x.detach()
        z = project(start.detach(), x, eps, norm)
        for _ in range(steps):
            with torch.enable_grad():
                z = z.requires_grad_(True)
                (g,) = torch.autograd.grad(objective(z).sum(), z)
            z = project(z.detach() + step_size * ascent_direction(g, norm), x, eps, norm)
    return z.detach()


# ----------------------------------------------------------------------------- PGD on CE
@register("attack", "pgd")
class PGD:
    """PGD on the cross-entropy (Madry et al. 2018): ``x' = argmax_{‖x'−x‖_p ≤ ε, x' ∈ [0,1]} CE(f(x'), y)``.

    ``steps`` projected steps of size ``α`` (:func:`projected_ascent`) from a uniform random
    start in the ball (or from ``x``); with ``restarts > 1`` the per-sample iterate with the
    highest CE is kept. Runs the model in eval mode (BatchNorm running statistics, no dropout)
    and restores every submodule's mode; the result is detached. The input contract is checked
    once per call (``x`` finite in [0, 1], ``y`` in ``[0, K)``, model output ``[B, K]`` and
    finite; ``ValueError`` naming the samples). Shapes: ``x: [B, C, H, W]``, ``y: [B]`` →
    ``[B, C, H, W]``.

    Args:
        eps: ε > 0 (pixel units). Usual budgets (Madry et al., ICLR 2018, arXiv:1706.06083): MNIST 0.3, CIFAR 8/255.
        step_size: α > 0 (MNIST 0.01, CIFAR 2/255).
        steps: ≥ 1 (MNIST 40, CIFAR 10).
        norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised steps).
        random_start: start uniformly in the ball (else at ``x``).
        restarts: number of random restarts (≥ 1).
        noise_seed: ``None`` (global RNG) or a seed for batch-independent per-sample starts
            (see the module docstring).

    Call: ``pgd(model, x, y, sample_seeds=None, *, check_range=True)``. ``sample_seeds: [B]`` (e.g. ``seed +
    dataset_index``) gives sample i the random start ``Generator(sample_seeds_i + 7919·restart)``
    instead of ``noise_seed``: independent of batching, sharding and the sample's pixels.

    ``eps`` and ``step_size`` stay settable after construction (validated ``> 0``).
    """

    eps = PositiveParameter()
    step_size = PositiveParameter()

    def __init__(
        self,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        noise_seed: int | None = None,
    ) -> None:
        check_count("steps", steps)
        check_norm(norm)
        check_count("restarts", restarts)
        self.eps, self.step_size, self.steps, self.norm = eps, step_size, steps, norm
        self.random_start, self.restarts, self.noise_seed = random_start, restarts, noise_seed

    def start(self, x: Tensor, restart: int = 0, sample_seeds: Tensor | Sequence[int] | None = None) -> Tensor:
        """The starting point: ``x + U(ball)`` (or ``x`` without random start).

        With ``sample_seeds: [B]`` sample i draws from ``Generator(sample_seeds_i + 7919·restart)``.
        """
        if not self.random_start:
            return x.detach().clone()
        if sample_seeds is not None:
            seeds = torch.as_tensor(sample_seeds, dtype=torch.int64).reshape(-1)
            if seeds.numel() != x.shape[0]:
                raise ValueError(f"sample_seeds must have {x.shape[0]} entries, got {seeds.numel()}")
            sampler = sample_linf_cube if self.norm == "linf" else sample_l2_ball
            noise = per_sample_noise(sampler, seeds + 7919 * restart, 1, tuple(x.shape[1:]), x.device, x.dtype, radius=self.eps)
            return x.detach() + noise[0]
        seed = None if self.noise_seed is None else self.noise_seed + 7919 * restart
        return x.detach() + draw_noise(x, self.norm, self.eps, seed)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, sample_seeds: Tensor | Sequence[int] | None = None,
        *, check_range: bool = True,
    ) -> Tensor:
        """PGD iterate ``[B, C, H, W]`` in ``B_p(x, ε) ∩ [0, 1]`` maximising the cross-entropy of ``y: [B]``.

        ``sample_seeds: [B]`` seed each sample's random start (see :meth:`start`);
        ``check_range=False`` lets ``x`` outside [0, 1] through the input check
        (:func:`robustattr.utils.contract.range_option`; iterates are still projected onto [0, 1]).
        """

        def ce(z: Tensor) -> Tensor:
            out = model(z)
            contract.check_model_output(out, z.shape[0])
            return F.cross_entropy(out, y, reduction="none")

        with contract.range_option(check_range), contract.entry() as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y)
            best = best_val = None
            for r in range(self.restarts):
                start = self.start(x, r, sample_seeds)
                z = projected_ascent(ce, x, start, self.eps, self.step_size, self.steps, self.norm)
                if self.restarts == 1:
                    return z
                with torch.no_grad():
                    val = ce(z)
                if best is None:
                    best, best_val = z, val
                else:
                    better = val > best_val
                    best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), z, best)
                    best_val = torch.maximum(val, best_val)
        assert best is not None
        return best.detach()

    def __repr__(self) -> str:
        return (
            f"PGD(eps={self.eps}, step_size={self.step_size}, steps={self.steps}, norm={self.norm!r}, "
            f"random_start={self.random_start}, restarts={self.restarts}, noise_seed={self.noise_seed})"
        )
