"""Engine benchmarks (issue 2): slider re-threshold, live re-evaluation, sparse size.

    python benchmarks/engine.py [slider|live|size]

Prints one JSON object: medians, ratios against the named baseline, and the target.
"""

import json
import sys

from pruneviz.workflows.bench import run_benchmarks

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else None
    print(json.dumps(run_benchmarks(name), indent=2))
