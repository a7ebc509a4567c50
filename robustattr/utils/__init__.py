"""Small shared helpers (per-sample random streams)."""

from robustattr.utils.rng import per_sample_generators, per_sample_noise

__all__ = ["per_sample_generators", "per_sample_noise"]
