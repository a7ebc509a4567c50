"""First-order worst-case attribution deviation estimates (not certificates) and their validation.

F. Wang & A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations",
CVPR 2023, arXiv:2303.00340. :mod:`robustattr.bounds.worst_case` computes ``ξ_max``, ``T_e``,
``T'_e`` and the cosine bound matrix-free; :mod:`robustattr.bounds.protocol` holds the attacks
of the validation protocol. The protocol over a data set (``evaluate_bounds``,
``BoundsEvaluator``) is in :mod:`robustattr.evaluation.bounds`. Sound certificates are in
:mod:`robustattr.certify`.
"""

from robustattr.bounds.protocol import (
    REPEAT_STRIDE,
    angle_deg,
    attacked_deviations,
    default_attack_steps,
    protocol_attacks,
)
from robustattr.bounds.worst_case import (
    FULL_JACOBIAN_LIMIT,
    AttributionJacobian,
    WorstCaseBounds,
    cosine_bound,
    full_jacobian,
    smooth_model,
    top_singular,
    worst_case_bounds,
)

__all__ = [
    "FULL_JACOBIAN_LIMIT",
    "REPEAT_STRIDE",
    "AttributionJacobian",
    "WorstCaseBounds",
    "angle_deg",
    "attacked_deviations",
    "cosine_bound",
    "default_attack_steps",
    "full_jacobian",
    "protocol_attacks",
    "smooth_model",
    "top_singular",
    "worst_case_bounds",
]
