"""Small shared helpers: per-sample random streams and the eval-mode context manager."""

from robustattr.utils.modes import eval_mode
from robustattr.utils.rng import per_sample_generators, per_sample_noise

__all__ = ["eval_mode", "per_sample_generators", "per_sample_noise"]
