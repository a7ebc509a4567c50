"""Attribution robustness metrics: functional tensors ops and torchmetrics classes."""

__all__: list[str] = []
