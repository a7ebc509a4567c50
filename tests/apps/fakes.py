"""A small evaluator for the application tests (run store, reports, CLI) independent of the real ones.

``python -m tests.apps.fakes fake --checkpoint C --output O …`` runs ``certify.py``'s CLI with
this evaluator as its only subcommand ``fake`` (used by the SIGKILL and lock tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from robustattr.apps.certify import Subcommand, main
from robustattr.evaluation.base import Evaluator


class FakeEvaluator(Evaluator):
    """Logit of the label, a per-sample seeded random number, NaN for every third index.

    Args:
        scale: multiplies the logit (> 0); above 100 :meth:`warnings` warns.
        seed: per-sample stream ``seed + index``.
        delay: seconds slept per batch (not part of the identity: it changes no result).
    """

    name = "fake"

    def __init__(self, scale: float = 1.0, seed: int = 0, delay: float = 0.0) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale, self.seed, self.delay = float(scale), int(seed), float(delay)
        self.calls: list[list[int]] = []

    def params(self) -> dict:
        return {"class": "tests.apps.fakes.FakeEvaluator", "scale": self.scale, "seed": self.seed}

    def columns(self, num_classes: int | None = None) -> list[str]:
        return ["label", "prediction", "logit", "noise", "correct", "maybe", "seconds"]

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        t0 = time.perf_counter()
        self.calls.append(index.tolist())
        with torch.no_grad():
            out = model(x)
        noise = torch.stack([
            torch.rand((), generator=torch.Generator().manual_seed(self.seed + i), dtype=torch.float64)
            for i in index.tolist()
        ])
        pred = out.argmax(1)
        maybe = torch.where(index.cpu() % 3 == 0, torch.full_like(noise, float("nan")), noise)
        if self.delay:
            time.sleep(self.delay)
        secs = torch.full((x.shape[0],), time.perf_counter() - t0, dtype=torch.float64)
        return {
            "label": y, "prediction": pred, "logit": out.gather(1, y[:, None])[:, 0] * self.scale,
            "noise": noise, "correct": pred == y, "maybe": maybe, "seconds": secs,
        }

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        return {
            "accuracy": float(results["correct"].double().mean()),
            "logit_mean": float(results["logit"].mean()),
            "maybe_median": float(results["maybe"].nanmedian()) if (~results["maybe"].isnan()).any() else float("nan"),
        }

    def warnings(self, input_shape: Sequence[int]) -> list[str]:
        return [f"scale {self.scale:g} > 100 for inputs {tuple(input_shape)}"] if self.scale > 100 else []


SUBS = {"fake": Subcommand(FakeEvaluator, "the fake evaluator of the tests", {"batch_size": 2})}


def fake_main(argv: Sequence[str] | None = None) -> None:
    """``certify.py``'s :func:`~robustattr.apps.certify.main` with the ``fake`` subcommand only."""
    main(argv, SUBS)


if __name__ == "__main__":
    fake_main(sys.argv[1:])
