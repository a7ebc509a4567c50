"""robustattr: attributionally robust training and certification with PyTorch Lightning."""

__version__ = "0.1.0"


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """Lazy top-level shortcuts (keep ``import robustattr`` light)."""
    if name == "evaluate_bounds":
        from robustattr.evaluation.bounds import evaluate_bounds

        return evaluate_bounds
    raise AttributeError(f"module 'robustattr' has no attribute {name!r}")
