"""Run a study: ``python study.py run configs/study/digits.yaml`` (train every objective, evaluate, one table).

See docs/guides/study.md (``study.py run --help`` / ``study.py report --help`` list every option).
"""

from robustattr.apps.study import main

if __name__ == "__main__":
    main()
