"""Loading a ViT-B/16 (vit-msn-base shape) checkpoint: Swift's `vitmsn bench --load` (parse, validate, CRC,
map; tensors ready to use) against `torch.load(weights_only=True)` of the same file, warm page cache,
interleaved by rounds. Formats: pytorch_model.bin and model.safetensors.

    .venv/bin/python scripts/bench_load.py [--rounds 3]
"""
import argparse
import json
import statistics
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import ViTMSNConfig, ViTMSNModel

from benchlib import median_seconds

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench-load"



def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = ViTMSNModel(ViTMSNConfig())
    for fmt, safe in [("bin", False), ("safetensors", True)]:
        directory = OUT / fmt
        if not directory.exists():
            model.save_pretrained(directory, safe_serialization=safe)
        weights = directory / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")
        python_load = (lambda: torch.load(weights, weights_only=True, mmap=False)) if fmt == "bin" else (lambda: load_file(weights))
        swift, python = [], []
        for _ in range(args.rounds):
            out = subprocess.run([str(ROOT / ".build" / "release" / "vitmsn"), "bench", "--load", "--model", str(directory),
                                  "--seconds", "3", "--json"], check=True, capture_output=True, text=True).stdout
            swift.append(json.loads(out)["load_ms"])
            python.append(median_seconds(python_load) * 1000)
        s, p = statistics.median(swift), statistics.median(python)
        reference = "torch.load" if fmt == "bin" else "safetensors.torch.load_file"
        print(f"ViT-B/16 {weights.name} ({weights.stat().st_size / 2**20:.0f} MB): Swift {s:.1f} ms, {reference} {p:.1f} ms ({p / s:.2f}×)")


if __name__ == "__main__":
    main()
