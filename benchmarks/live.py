"""How live the workbench is on real architectures: `bench_live_model` on the digits
samples and on our ResNet-50, DenseNet-121 and ViT-B/16 at full width (64x64 inputs, 256
random images of 1,000 classes: liveness does not depend on what the weights learned).

    python benchmarks/live.py [--models resnet50,densenet121,vit_b_16,sample:digits_cnn]

Prints one JSON object: per model, every figure with its baseline in the same run
(Torch-Pruning's graph build; torch.nn.utils.prune re-pruning every layer) and the
targets of issue 17. The same figures for one model: `pruneviz bench live MODEL --json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pruneviz.data.sources import Source
from pruneviz.workflows.live_bench import bench_live_model

HERE = Path(__file__).resolve().parent
ZOO = ["resnet50", "densenet121", "vit_b_16"]


def synthetic_images(folder: Path, samples: int = 256, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "images.npz"
    np.savez(path, x=rng.standard_normal((samples, 3, size, size)).astype(np.float32),
             y=rng.integers(0, 1000, samples).astype(np.int64))
    return path


def source_for(name: str, data: str) -> Source:
    if name.startswith("sample:"):
        return Source(model=name)
    return Source(model=f"{HERE / 'live_models.py'}:{name}", data=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join([*ZOO, "sample:digits_cnn",
                                                      "sample:digits_resnet"]))
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one model, in this process
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(bench_live_model(source_for(args.one, args.data), moves=args.moves)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(synthetic_images(Path(tmp)))
        for name in args.models.split(","):  # each in a fresh process: memory is per model
            out = subprocess.run([sys.executable, __file__, "--one", name, "--data", data,
                                  "--moves", str(args.moves)],
                                 capture_output=True, text=True, check=False)
            results[name] = (json.loads(out.stdout) if out.returncode == 0
                             else {"error": out.stderr.strip().splitlines()[-1:]})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
