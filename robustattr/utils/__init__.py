"""Small shared helpers: the input contract, per-sample random streams and the eval-mode context manager."""

from robustattr.utils import contract
from robustattr.utils.contract import range_check
from robustattr.utils.modes import eval_mode
from robustattr.utils.rng import per_sample_generators, per_sample_noise

__all__ = ["contract", "eval_mode", "per_sample_generators", "per_sample_noise", "range_check"]
