"""Applications on top of the library: the only code that reads argv or writes files.

``train`` (LightningCLI), ``certify`` (certify / bound / attack a checkpoint, on one process or
under torchrun / SLURM), ``demo``, ``reports`` (TSV/JSON/plots), ``store`` (the resumable,
sharded run store), ``distributed`` (joining a launcher's process group) and ``tracking``
(one W&B run per certification job).
"""
