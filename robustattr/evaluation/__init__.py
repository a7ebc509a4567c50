"""The evaluation suite of a checkpoint: evaluators over batches (per-sample tensors + summary)."""

from robustattr.evaluation.base import Evaluator, describe
from robustattr.evaluation.sharding import assign, shard

__all__ = ["Evaluator", "assign", "describe", "shard"]
