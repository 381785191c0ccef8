"""Side-by-side training-step benchmark: forward, backward and an AdamW update of a 10-label
ViTMSNForImageClassification, in PyTorch (eager attention and sdpa, fp32, all cores) and in the Swift CLI
(`vitmsn bench --train`), on the same shapes with random inputs, interleaved round by round. Prints images/s
(median over rounds) and Swift's ratio to the faster PyTorch.

    .venv/bin/python scripts/bench_train.py --preset small:16 --preset fashion-mnist:256
"""
import argparse
from pathlib import Path

import torch
from transformers import ViTMSNConfig, ViTMSNForImageClassification

from benchlib import swift_against_torch

PRESETS = {  # hidden, layers, heads, intermediate, image, patch, channels
    "small": (384, 12, 6, 1536, 224, 16, 3), "base": (768, 12, 12, 3072, 224, 16, 3),
    "fashion-mnist": (192, 6, 3, 768, 28, 4, 1),
}
ROOT = Path(__file__).resolve().parent.parent


def torch_step(preset, batch, attention):
    hidden, layers, heads, intermediate, image, patch, channels = PRESETS[preset]
    config = ViTMSNConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=intermediate, image_size=image, patch_size=patch, num_channels=channels,
                          num_labels=10, attn_implementation=attention)
    model = ViTMSNForImageClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    pixels = torch.randn(batch, channels, image, image)
    labels = torch.arange(batch) % 10

    def step():
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", action="append", help="NAME:BATCH, e.g. small:16")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--binary", default=ROOT / ".build" / "release" / "vitmsn")
    args = parser.parse_args()
    torch.manual_seed(0)
    cells = [(name, int(batch)) for name, batch in (p.split(":") for p in args.preset or ["small:16", "fashion-mnist:256"])]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':<15}{'batch':>6}{'Swift':>9}{'torch sdpa':>12}{'torch eager':>13}{'ratio':>8}   (images/s per training step)")
    for name, batch in cells:
        steps = {a: torch_step(name, batch, a) for a in ("sdpa", "eager")}
        m = swift_against_torch(args.binary, ["--train", "--preset", name, "--batch", batch], steps, batch, args.rounds, args.seconds)
        print(f"{name:<15}{batch:>6}{m['swift']:>9.2f}{m['sdpa']:>12.2f}{m['eager']:>13.2f}"
              f"{m['swift'] / max(m['sdpa'], m['eager']):>7.2f}×")


if __name__ == "__main__":
    main()
