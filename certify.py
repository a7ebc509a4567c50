"""Evaluate a checkpoint: ``python certify.py {smoothing|bounds|attack} --checkpoint C [--output O] …``.

See docs/guides/certify.md (``certify.py <subcommand> --help`` lists every option).
"""

from robustattr.apps.certify import main

if __name__ == "__main__":
    main()
