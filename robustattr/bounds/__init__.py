"""First-order worst-case attribution deviation estimates (not certificates) and their validation.

F. Wang & A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations",
CVPR 2023, arXiv:2303.00340. :mod:`robustattr.bounds.worst_case` computes ``ξ_max``, ``T_e``,
``T'_e`` and the cosine bound matrix-free; :mod:`robustattr.bounds.protocol` attacks every
sample to see how often the estimates are exceeded. Sound certificates are in
:mod:`robustattr.certify`.
"""

from robustattr.bounds.protocol import BoundsEvaluation, evaluate_bounds
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
    "AttributionJacobian",
    "BoundsEvaluation",
    "WorstCaseBounds",
    "cosine_bound",
    "evaluate_bounds",
    "full_jacobian",
    "smooth_model",
    "top_singular",
    "worst_case_bounds",
]
