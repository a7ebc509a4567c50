"""Certification: uniform-smoothing certificates (sound) and worst-case deviation bounds (first-order)."""

__all__: list[str] = []
