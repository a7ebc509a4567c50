"""Clean and PGD (robust) accuracy as evaluators.

- :class:`CleanAccuracy`: ``correct_i = [argmax_k f_k(x_i) = y_i]``.
- :class:`PGDAccuracy`: additionally ``robust_correct_i = correct_i ∧ [argmax_k f_k(x̃_i) = y_i]``
  with ``x̃_i`` the PGD iterate on the cross-entropy in the ε-ball ∩ [0, 1] (A. Madry,
  A. Makelov, L. Schmidt, D. Tsipras & A. Vladu, "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018, arXiv:1706.06083). A sample the model already gets wrong
  is not robust (x itself lies in the ball), so robust accuracy ≤ clean accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from robustattr.attacks.pgd import PGD
from robustattr.evaluation._common import check_batch, masked_mean
from robustattr.evaluation.base import Evaluator
from robustattr.registry import register
from robustattr.utils import contract, eval_mode

__all__ = ["CleanAccuracy", "PGDAccuracy"]


@register("evaluator", "accuracy")
class CleanAccuracy(Evaluator):
    """Clean accuracy of the classifier.

    Columns (each ``[b]``): ``label`` (int64, the dataset label), ``prediction`` (int64,
    ``argmax_k f_k(x)``), ``correct`` (bool). Summary: ``accuracy`` = mean of ``correct``
    (NaN for no samples). Cost: one forward pass per sample.
    """

    name = "accuracy"

    def columns(self, num_classes: int | None = None) -> list[str]:
        """``["label", "prediction", "correct"]``."""
        return ["label", "prediction", "correct"]

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Per-sample ``label``, ``prediction``, ``correct`` for ``x: [b, C, H, W]``, ``y, index: [b]``.

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            return self._evaluate(model, x, y, index)

    def _evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        check_batch(x, y, index, model)
        with eval_mode(model), torch.no_grad():
            pred = model(x).argmax(dim=1)
        y = y.to(torch.int64)
        return {"label": y, "prediction": pred, "correct": pred == y}

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """``{"accuracy": mean(correct)}``."""
        return {"accuracy": masked_mean(results["correct"])}


@register("evaluator", "pgd_accuracy")
class PGDAccuracy(Evaluator):
    """Clean and PGD robust accuracy (Madry et al., ICLR 2018, arXiv:1706.06083).

    The attack maximises ``CE(f(x̃), y)`` (y the dataset label) over ``‖x̃ − x‖_p ≤ ε``,
    ``x̃ ∈ [0, 1]``; sample i starts at ``x_i + U(ball)`` drawn from a generator seeded
    ``seed + index_i`` (plus ``7919·restart``), so results do not depend on batching or on
    the number of processes.

    Args:
        attack: the :class:`~robustattr.attacks.PGD` attack. Default ``PGD(eps=0.3,
            step_size=0.01, steps=40, random_start=True)``, the MNIST-scale ℓ∞ threat model;
            CIFAR-scale: ``PGD(eps=8/255, step_size=2/255, steps=10)``.
        seed: base of the per-sample seeds.

    Columns (each ``[b]``): ``label``, ``prediction`` (int64), ``correct``, ``robust_correct``
    (bool, ``correct ∧ argmax f(x̃) = y``). Summary: ``accuracy``, ``robust_accuracy``.
    Cost per sample: ``restarts·steps`` forward/backward passes plus two forwards.
    """

    name = "pgd_accuracy"

    def __init__(self, attack: PGD | None = None, seed: int = 0) -> None:
        attack = attack if attack is not None else PGD(eps=0.3, step_size=0.01, steps=40, random_start=True)
        if not isinstance(attack, PGD):
            raise ValueError(f"attack must be a robustattr.attacks.PGD instance, got {type(attack).__name__}")
        self.attack, self.seed = attack, int(seed)

    def columns(self, num_classes: int | None = None) -> list[str]:
        """``["label", "prediction", "correct", "robust_correct"]``."""
        return ["label", "prediction", "correct", "robust_correct"]

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Per-sample clean and robust correctness for ``x: [b, C, H, W]``, ``y, index: [b]``.

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            return self._evaluate(model, x, y, index)

    def _evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        check_batch(x, y, index, model)
        y = y.to(torch.int64)
        with eval_mode(model):
            with torch.no_grad():
                pred = model(x).argmax(dim=1)
            x_adv = self.attack(model, x, y, sample_seeds=index.to(torch.int64) + self.seed)
            with torch.no_grad():
                pred_adv = model(x_adv).argmax(dim=1)
        correct = pred == y
        return {"label": y, "prediction": pred, "correct": correct, "robust_correct": correct & (pred_adv == y)}

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """``{"accuracy": mean(correct), "robust_accuracy": mean(robust_correct)}``."""
        return {"accuracy": masked_mean(results["correct"]), "robust_accuracy": masked_mean(results["robust_correct"])}

    def cost(self) -> float:
        """``restarts · steps + 2`` passes per sample."""
        return float(self.attack.restarts * self.attack.steps + 2)
