"""Certify a checkpoint: ``python certify.py --checkpoint outputs/…/last.ckpt --output outputs/certify``.

See README.md, section "Certified attribution robustness" (``--help`` lists every option).
"""

from robustattr.apps.certify import main

if __name__ == "__main__":
    main()
