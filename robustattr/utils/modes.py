"""One eval-mode context manager, used wherever robustattr evaluates a model it was handed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode (BatchNorm uses running statistics, dropout is off), then
    restore the ``training`` flag of every submodule individually.

    Evaluation (certificates, bounds, attacks, evaluators) and the inner maximisations of the
    robust losses run under it, so a BatchNorm model left in train mode gives the same
    per-sample results as in eval mode and results do not depend on the batch composition;
    mixed train/eval trees come back exactly as they were.

    Example:
        >>> net = nn.Sequential(nn.BatchNorm1d(3), nn.Dropout())
        >>> net[1].eval()  # doctest: +ELLIPSIS
        Dropout(...)
        >>> with eval_mode(net):
        ...     assert not net.training and not net[0].training
        >>> net.training, net[0].training, net[1].training
        (True, True, False)
    """
    saved = [[(m, m.training) for m in model.modules()] for model in models]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for per_model in saved:
            for m, mode in per_model:
                m.training = mode
