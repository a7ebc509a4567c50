"""robustattr: attributionally robust training and certification with PyTorch Lightning."""

__version__ = "0.1.0"
