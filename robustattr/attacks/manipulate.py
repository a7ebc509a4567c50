"""Explanation manipulation (Dombrowski et al., "Explanations can be manipulated and geometry is to blame", NeurIPS 2019, arXiv:1906.07983).

Minimise ``L(x̃) = γ_e·MSE(ā(x̃), ā_t) + γ_o·MSE(softmax f(x̃), softmax f(x))`` with Adam
on ``x̃``, where ``ā = a/Σa`` is the sum-normalised map ``a = Σ_c |g_c|`` and ``ā_t`` the
target map. The ascent runs on a softplus surrogate whose β grows geometrically from
``beta_start`` to ``beta_end`` over the steps (smooth early, faithful late); max-pooling is
replaced by log-mean-exp pooling with the same annealed β (``smooth_pool=False``: kept); a
model with neither ReLU nor max-pooling is used as is (no annealing). After every
step ``x̃`` is clipped to [0, 1] (and to the optional ε-ball), the label is checked on the
ORIGINAL network, and the label-preserving iterate with the lowest criterion
``MSE(ā_orig(x̃), ā_t)`` (original network) is kept per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.core import (
    AttackResult,
    RandomStreams,
    attribution_noise,
    attribution_with_noise,
    project,
)
from robustattr.attacks.ifia import _normalised_map
from robustattr.attributions.base import Attribution
from robustattr.models.activation import SmoothMaxPool2d, replace_activation, replace_maxpool
from robustattr.registry import register
from robustattr.utils import contract
from robustattr.utils.modes import eval_mode

__all__ = ["ManipulateAttack"]


@register("attack", "manipulate")
class ManipulateAttack:
    """Dombrowski et al.'s manipulation attack towards a target explanation.

    Args:
        attribution: the attribution ``g`` (any :class:`Attribution`).
        steps: Adam iterations (default 500; the paper used up to 1500).
        lr: Adam learning rate (default 2e-4).
        gamma_e: weight of the explanation term (default 1e11).
        gamma_o: weight of the output-preservation term (default 1e6).
        beta_start, beta_end: softplus β grown geometrically, ``β_t = β₀ (β₁/β₀)^{t/(T−1)}``
            (default 10 → 100).
        eps: optional radius of an ε-ball around x (None: only the [0, 1] box).
        norm: ball of ``eps`` (``"linf"`` or ``"l2"``).
        seed: seed for smoothed attributions' noise.
        smooth_pool: also replace max-pooling by log-mean-exp pooling in the surrogate (default True).

    Call: ``attack(model, x, y, target=None, sample_seeds=None) -> AttackResult``; ``target`` is a
    map ``[B, H, W]`` or target images ``[B, C, H, W]`` (their attribution for the class the
    model predicts); default: the batch rolled by one (each sample's target is its neighbour's
    explanation). ``criterion`` is ``MSE(ā(x̃), ā_t)`` on the original network (lower is better).
    Runs the model in eval mode (every submodule's mode restored) and checks the input contract
    once per call (``ValueError`` naming the samples).
    Cost per step: one attribution with ``create_graph=True`` + backward on the surrogate, one
    forward and one attribution on the original network.
    """

    criterion_sense = "min"

    def __init__(
        self,
        attribution: Attribution,
        steps: int = 500,
        lr: float = 2e-4,
        gamma_e: float = 1e11,
        gamma_o: float = 1e6,
        beta_start: float = 10.0,
        beta_end: float = 100.0,
        eps: float | None = None,
        norm: str = "linf",
        seed: int | None = None,
        smooth_pool: bool = True,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if gamma_e < 0 or gamma_o < 0:
            raise ValueError(f"gamma_e and gamma_o must be >= 0, got {gamma_e}, {gamma_o}")
        if beta_start <= 0 or beta_end <= 0:
            raise ValueError(f"beta_start and beta_end must be > 0, got {beta_start}, {beta_end}")
        if eps is not None and eps <= 0:
            raise ValueError(f"eps must be > 0 or None, got {eps}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        self.attribution, self.steps, self.lr = attribution, steps, lr
        self.gamma_e, self.gamma_o, self.beta_start, self.beta_end = gamma_e, gamma_o, beta_start, beta_end
        self.eps, self.norm, self.seed, self.smooth_pool = eps, norm, seed, smooth_pool

    def _target_map(self, model: nn.Module, x: Tensor, target: Tensor | None, noise: Tensor | None) -> Tensor:
        if target is None:
            target = x.roll(1, dims=0)
        if target.dim() == 3:
            if target.shape != (x.shape[0], *x.shape[2:]):
                raise ValueError(f"target map must be [B, H, W]={(x.shape[0], *x.shape[2:])}, got {tuple(target.shape)}")
            a = target.abs().to(x.dtype)
            return a / a.flatten(1).sum(1).clamp_min(1e-30).view(-1, 1, 1)
        if target.shape != x.shape:
            raise ValueError(f"target images must have the shape of x {tuple(x.shape)}, got {tuple(target.shape)}")
        with torch.no_grad():
            out = model(target)
            contract.check_model_output(out, target.shape[0])
            yt = out.argmax(1)
        return _normalised_map(attribution_with_noise(self.attribution, model, target, yt, noise)).detach()

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None = None, sample_seeds: Tensor | Sequence[int] | None = None,
        *, check_range: bool = True,
    ) -> AttackResult:
        """Manipulate the attributions of ``x: [B, C, H, W]`` (labels ``y: [B]``) towards ``target``.

        ``target``: maps ``[B, H, W]`` or images ``[B, C, H, W]`` (default: the batch rolled by
        one); ``sample_seeds: [B]`` seed the noise of smoothed attributions per sample;
        ``check_range=False`` lets pixels outside [0, 1] through the input check
        (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range), contract.entry() as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y)
                if target is not None and target.dim() == 4:
                    contract.check_images(target, "target")
            return self._run(model, x.detach(), y, target, sample_seeds)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, sample_seeds: Tensor | Sequence[int] | None) -> AttackResult:
        streams = RandomStreams(x, self.seed, sample_seeds)
        noise = attribution_noise(self.attribution, x, streams)
        annealed: tuple[type[nn.Module], ...] = (nn.Softplus, SmoothMaxPool2d)
        try:
            surrogate = replace_activation(model, nn.Softplus(beta=self.beta_start))
        except ValueError:  # no ReLU to swap: keep the model's own activations and their β
            surrogate, annealed = model, (SmoothMaxPool2d,)
        if self.smooth_pool and any(isinstance(m, nn.MaxPool2d) for m in surrogate.modules()):
            surrogate = replace_maxpool(surrogate, self.beta_start)
        # the surrogate's own (deep-copied) modules; β is annealed on them only, never on the model's
        softplus = [m for m in surrogate.modules() if isinstance(m, annealed)] if surrogate is not model else []
        t_map = self._target_map(model, x, target, noise)
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
            skipped = model(x).argmax(1) != y

        def crit(z: Tensor) -> Tensor:
            a = _normalised_map(attribution_with_noise(self.attribution, model, z, y, noise)).detach()
            return (a - t_map).pow(2).flatten(1).mean(1)

        view = (-1, *([1] * (x.dim() - 1)))
        clean_c = crit(x)
        best_c, best_x = clean_c.clone(), x.clone()
        x_adv = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([x_adv], lr=self.lr)
        ratio = self.beta_end / self.beta_start
        for t in range(self.steps):
            beta = self.beta_start * ratio ** (t / max(1, self.steps - 1))
            for m in softplus:
                m.beta = beta
            with torch.enable_grad():
                g = attribution_with_noise(self.attribution, surrogate, x_adv, y, noise, create_graph=True)
                e_term = (_normalised_map(g) - t_map).pow(2).flatten(1).mean(1)
                o_term = (F.softmax(surrogate(x_adv), dim=1) - p_clean).pow(2).mean(1)
                loss = (self.gamma_e * e_term + self.gamma_o * o_term).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward(inputs=[x_adv])
            opt.step()
            with torch.no_grad():
                x_adv.copy_(project(x_adv, x, self.eps, self.norm) if self.eps is not None else x_adv.clamp(0.0, 1.0))
                ok = (model(x_adv).argmax(1) == y) & ~skipped
            c = crit(x_adv.detach())
            improve = ok & (c < best_c)
            best_c = torch.where(improve, c, best_c)
            best_x = torch.where(improve.view(view), x_adv.detach(), best_x)
        return AttackResult(best_x.detach(), (best_c < clean_c) & ~skipped, skipped, best_c)

    def __repr__(self) -> str:
        return f"ManipulateAttack(steps={self.steps}, lr={self.lr}, gamma=({self.gamma_e}, {self.gamma_o}), beta={self.beta_start}->{self.beta_end}, eps={self.eps})"
