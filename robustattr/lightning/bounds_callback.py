"""Validation-time first-order worst-case attribution deviation estimates.

A thin adapter over :class:`robustattr.evaluation.BoundsEvaluator` (F. Wang & A. W.-K. Kong,
"A Practical Upper Bound for the Worst-Case Attribution Deviations", CVPR 2023,
arXiv:2303.00340). These are first-order estimates, not certificates.
"""

from __future__ import annotations

from robustattr.evaluation.bounds import BoundsEvaluator
from robustattr.lightning.eval_base import EvalSubsetCallback

__all__ = ["WorstCaseBoundCallback"]

#: Summary entry → logged name (per norm; ``<norm>/`` prefixed with several norms).
_PER_NORM = {
    "T_e": "T_e", "T_e_max": "T_e_max", "T_e_prime": "T_e_prime", "T_e_prime_max": "T_e_prime_max",
    "T_c_deg": "T_c_deg", "T_c_deg_max": "T_c_deg_max", "frac_vacuous": "T_c_vacuous_frac",
}
#: Also logged when the evaluator attacks (``attack_repeats > 0``).
_PER_NORM_ATTACK = ("T_hat_e", "frac_outside_T_e", "frac_outside_T_e_prime", "max_rel_excess_T_e_prime", "tightness")


class WorstCaseBoundCallback(EvalSubsetCallback):
    """Log worst-case attribution deviation estimates on a fixed validation subset.

    Per sample (on the softplus surrogate of the model, max-pooling smoothed by default):
    ``ξ_max = σ_max(∂g/∂x)``, and per norm ``T_e`` (ℓ2: ``ξ_max ε``; ℓ∞:
    ``ε·min(sqrt(Σ|P_ij|), √d ξ_max)``), ``T'_e = c·T_e`` (Eq. 11) and the cosine bound in
    degrees ``T_c_deg`` (Eq. 10; undefined where vacuous, ``T_e > ‖g(x)‖``).

    Logged keys (means over the subset, ``_max`` the maximum): ``val_bound/xi_max``,
    ``val_bound/xi_max_max`` and, per norm, ``val_bound/T_e``, ``val_bound/T_e_max``,
    ``val_bound/T_e_prime``, ``val_bound/T_e_prime_max``, ``val_bound/T_c_deg`` (mean over
    non-vacuous samples), ``val_bound/T_c_deg_max``, ``val_bound/T_c_vacuous_frac``. With
    several norms the per-norm keys read ``val_bound/<norm>/T_e`` etc. With an evaluator that
    attacks (``attack_repeats > 0``) also ``T_hat_e``, ``frac_outside_T_e``,
    ``frac_outside_T_e_prime``, ``max_rel_excess_T_e_prime``, ``tightness`` per norm and
    ``val_bound/n_skipped``.

    Args:
        evaluator: the :class:`~robustattr.evaluation.BoundsEvaluator`. Default
            ``BoundsEvaluator(norms=("l2", "linf"), eps={"l2": 0.1, "linf": 0.01})``.
        num_samples, every_n_epochs, batch_size, seed, progress, prefix: see
            :class:`EvalSubsetCallback` (prefix default ``val_bound``).
    """

    prefix = "val_bound"

    def __init__(
        self,
        evaluator: BoundsEvaluator | None = None,
        num_samples: int = 32,
        every_n_epochs: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = True,
        prefix: str | None = None,
    ) -> None:
        if evaluator is None:
            evaluator = BoundsEvaluator(norms=("l2", "linf"), eps={"l2": 0.1, "linf": 0.01})
        if not isinstance(evaluator, BoundsEvaluator):
            raise ValueError(f"evaluator must be a BoundsEvaluator, got {type(evaluator).__name__}")
        super().__init__(evaluator, num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size,
                         seed=seed, progress=progress, prefix=prefix)

    def log_keys(self, summary: dict[str, float]) -> dict[str, float]:
        """The evaluator's means/maxima under this callback's documented names."""
        ev = self.evaluator
        assert isinstance(ev, BoundsEvaluator)
        out = {"xi_max": summary["xi_max"], "xi_max_max": summary["xi_max_max"]}
        names = dict(_PER_NORM)
        if ev.attack_repeats > 0:
            names.update({k: k for k in _PER_NORM_ATTACK})
            out["n_skipped"] = summary["n_skipped"]
        for norm in ev.norms:
            for src, dst in names.items():
                out[ev.key(norm, dst)] = summary[ev.key(norm, src)]
        return out
