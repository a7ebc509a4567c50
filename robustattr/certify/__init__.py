"""Certification: uniform-smoothing certificates (sound) and worst-case deviation bounds (first-order)."""

from robustattr.certify.smoothing import (
    BoundedAttribution,
    SmoothingCertificate,
    UniformSmoothingCertifier,
    bound_attribution,
    certified_cosine,
    certified_eps_max,
    mc_margin,
    paper_cosine_unsound,
)
from robustattr.certify.volumes import (
    eps_max_large_d,
    lens_fraction,
    nonoverlap_fraction,
    nonoverlap_fraction_inverse,
    nonoverlap_fraction_large_d,
)
from robustattr.certify.worst_case import (
    AttributionJacobian,
    WorstCaseBounds,
    cosine_bound,
    full_jacobian,
    top_singular,
    worst_case_bounds,
)

__all__: list[str] = [
    "AttributionJacobian",
    "WorstCaseBounds",
    "cosine_bound",
    "full_jacobian",
    "top_singular",
    "worst_case_bounds",
    "BoundedAttribution",
    "SmoothingCertificate",
    "UniformSmoothingCertifier",
    "bound_attribution",
    "certified_cosine",
    "certified_eps_max",
    "eps_max_large_d",
    "lens_fraction",
    "mc_margin",
    "nonoverlap_fraction",
    "nonoverlap_fraction_inverse",
    "nonoverlap_fraction_large_d",
    "paper_cosine_unsound",
]
