"""Sound certificates of attribution robustness: uniform ℓ2 smoothing and its ball-volume maths.

First-order worst-case estimates (not certificates) live in :mod:`robustattr.bounds`.
"""

from robustattr.certify.margins import (
    hoeffding_samples_ratio,
    mc_margin,
    norm_lower_bound,
    resolve_margin,
)
from robustattr.certify.smoothing import (
    BoundedAttribution,
    SmoothingCertificate,
    UniformSmoothingCertifier,
    bound_attribution,
    certified_cosine,
    certified_eps_max,
    paper_cosine_unsound,
)
from robustattr.certify.volumes import (
    eps_max_large_d,
    lens_fraction,
    nonoverlap_fraction,
    nonoverlap_fraction_inverse,
    nonoverlap_fraction_large_d,
)

__all__: list[str] = [
    "BoundedAttribution",
    "SmoothingCertificate",
    "UniformSmoothingCertifier",
    "bound_attribution",
    "certified_cosine",
    "certified_eps_max",
    "eps_max_large_d",
    "lens_fraction",
    "hoeffding_samples_ratio",
    "mc_margin",
    "norm_lower_bound",
    "nonoverlap_fraction",
    "nonoverlap_fraction_inverse",
    "nonoverlap_fraction_large_d",
    "paper_cosine_unsound",
    "resolve_margin",
]
