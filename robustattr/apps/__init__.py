"""Applications on top of the library: the only code that reads argv or writes files.

``train`` (LightningCLI), ``certify`` (certify / bound / attack a checkpoint), ``demo``,
``reports`` (TSV/JSON/plots) and ``store`` (the resumable run store).
"""
