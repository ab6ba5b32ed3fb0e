"""Run every benchmark and print one JSON document: `make bench`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["tx_cosim.py", "rx_cosim.py", "fulllink_cosim.py", "auth_throughput.py", "pa_throughput.py",
              "reconcile_cascade.py", "reconcile_ldpc.py", "distill_throughput.py", "boards_fmax.py"]


def main() -> int:
    out = {}
    for name in BENCHMARKS:
        res = subprocess.run([sys.executable, str(HERE / name)], capture_output=True, text=True)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        out[name.removesuffix(".py")] = json.loads(res.stdout)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
