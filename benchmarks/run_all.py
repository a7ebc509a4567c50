"""``make bench``: run every benchmark script in this folder and print the ratios they wrote.

Each script writes ``benchmarks/results/<name>.json``; ratios are always against a peer
measured in the same run (Captum, scipy loops, a standard training step, full Jacobians).
Pass ``--quick`` to forward it to every script (smaller batches/repeats).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py")
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *argv], cwd=HERE.parent)
        print(f"--- {script.name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    print("\n=== results ===")
    for res in sorted((HERE / "results").glob("*.json")):
        data = json.loads(res.read_text())
        print(f"{res.relative_to(HERE.parent)}: {json.dumps(data)[:400]}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
