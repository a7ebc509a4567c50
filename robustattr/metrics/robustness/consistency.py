"""Consistency (Dasgupta et al. 2022): samples with the same discretised explanation share a prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attributions import Attribution
from robustattr.metrics.robustness.base import RobustnessMetric
from robustattr.registry import register
from robustattr.utils import contract, eval_mode

__all__ = ["Consistency", "discretise"]

_DISCRETISERS = ("top_n_sign", "sign", "floating_points")


def discretise(a: Tensor, method: str = "top_n_sign", n: int = 5) -> Tensor:
    """Quantus's discretisations of flattened explanations ``[B, d]``, as integer bit patterns ``[B, d']``.

    ``top_n_sign``: ``sign(a)[:, :n]`` (the signs of the first n features); ``sign``:
    ``sign(a)``; ``floating_points``: ``a`` rounded to ``n`` decimals. Two samples share a label
    iff the patterns are bitwise equal (Quantus hashes the array bytes, so ``−0.0 ≠ 0.0``).
    """
    if method == "top_n_sign":
        d = torch.sign(a[:, :n])
    elif method == "sign":
        d = torch.sign(a)
    elif method == "floating_points":
        d = torch.round(a, decimals=n)
    else:
        raise ValueError(f"discretise must be one of {_DISCRETISERS}, got {method!r}")
    itype = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
    return d.contiguous().view(itype[d.dtype])


@register("metric", "consistency")
class Consistency(RobustnessMetric):
    """``Cons(x_i) = Σ_{j≠i} 1[ŷ_i = ŷ_j] 1[D(a_i) = D(a_j)] / (Σ_{j≠i} 1[D(a_i) = D(a_j)] + 10⁻⁹)`` (higher is better).

    Dasgupta, Frost & Moshkovitz, "Framework for Evaluating Faithfulness of Local
    Explanations", ICML 2022 (arXiv:2202.00734), as implemented by Quantus 0.6
    (``Consistency``): among the *other samples of the same batch* whose discretised
    explanation ``D(a)`` equals sample i's, the fraction with the same predicted class ``ŷ``
    (0 when no other sample shares the label). ``a`` is normalised by its max ``|·|`` and
    taken in absolute value (Quantus's defaults); ``D`` is :func:`discretise` (default
    ``top_n_sign`` with n = 5). A within-batch statistic, as in Quantus (whose batches have
    ``batch_size`` samples): the value of a sample depends on its batch; use the same batches
    to compare. Difference: per-sample normalisation (irrelevant for the sign discretisers).

    Args:
        discretise_method: ``"top_n_sign"`` (default), ``"sign"`` or ``"floating_points"``.
        n: features kept by ``top_n_sign`` / decimals of ``floating_points`` (default 5;
            Quantus's ``floating_points`` default is 2).
        attribution, internal_batch_size, normalise, take_abs: see :class:`RobustnessMetric`.

    Shapes: ``update(model, x [B, C, H, W], y [B])``; ``per_sample → [B]``.
    """

    name = "consistency"
    higher_is_better = True

    def __init__(
        self,
        attribution: Attribution | None = None,
        discretise_method: str = "top_n_sign",
        n: int = 5,
        internal_batch_size: int | None = 256,
        normalise: bool = True,
        take_abs: bool = True,
        **kwargs: Any,
    ) -> None:
        if discretise_method not in _DISCRETISERS:
            raise ValueError(f"discretise_method must be one of {_DISCRETISERS}, got {discretise_method!r}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        super().__init__(attribution, 1, None, 0, internal_batch_size, normalise, take_abs, False, **kwargs)
        self.discretise_method = discretise_method
        self.n = n

    def per_sample(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor | Sequence[int] | None = None,
        x_perturbed: Tensor | None = None,
        *,
        check_range: bool = True,
    ) -> Tensor:
        """Within-batch consistency ``[B]`` (float64); ``index`` and ``x_perturbed`` are unused.

        The input contract is checked on ``x`` (``check_range=False`` lets pixels outside [0, 1]
        through, :func:`robustattr.utils.contract.range_option`).
        """
        if x.dim() < 2 or y.shape != (x.shape[0],):
            raise ValueError(f"x must be [B, ...] and y [B], got {tuple(x.shape)} and {tuple(y.shape)}")
        x, y = x.detach(), y.detach()
        idx = None if index is None else torch.as_tensor(index).reshape(-1)
        with contract.range_option(check_range), contract.entry(labels=y, index=idx) as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y, index=idx)
            a = self.explain(model, x, y)
            if outer:
                contract.check_finite(a, "attribution", index=idx)
            chunk = self.internal_batch_size or x.shape[0]
            with torch.no_grad():
                pred = torch.cat([model(x[i : i + chunk]).argmax(dim=1) for i in range(0, x.shape[0], chunk)])
        labels = discretise(a.reshape(a.shape[0], -1), self.discretise_method, self.n)
        same_label = (labels.unsqueeze(1) == labels.unsqueeze(0)).all(dim=-1)
        off_diag = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        same_label = same_label & off_diag
        same_pred = (pred.unsqueeze(1) == pred.unsqueeze(0)) & off_diag
        num = (same_label & same_pred).sum(dim=1).double()
        return num / (same_label.sum(dim=1).double() + 1e-9)
