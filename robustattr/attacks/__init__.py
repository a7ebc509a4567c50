"""Attacks: PGD on the loss and attribution attacks; all batched, results detached in ball ∩ [0,1]."""

__all__: list[str] = []
