"""Side-by-side MSN pretraining step: the same step in PyTorch (written from the official code, as the
parity fixtures are: target view through the EMA encoder and head without gradients, anchor view with
patches dropped, focal views with interpolated positions, the MSN loss, backward, clipping, AdamW with
MSN's decay groups, the EMA update) and in the Swift CLI (`vitmsn bench --msn CONFIG`), on the shapes of a
pretraining config, interleaved round by round. Prints images/s (median over rounds) and Swift's ratio.

    .venv/bin/python scripts/bench_msn_step.py --config configs/fashion_mnist_msn.json
"""
import argparse
import copy
import json
from pathlib import Path

import torch
from transformers import ViTMSNConfig, ViTMSNModel

from bench_train import PRESETS
from benchlib import swift_against_torch
from make_msn_fixtures import cls_after_layernorm, msn_loss, projection_head

ROOT = Path(__file__).resolve().parent.parent


def torch_step(config_path, attention):
    c = json.loads(Path(config_path).read_text())
    meta, criterion, data, optimization = (c.get(k, {}) for k in ("meta", "criterion", "data", "optimization"))
    hidden, layers, heads, intermediate, _, patch, channels = PRESETS[meta.get("model", "fashion-mnist")]
    a = meta.get("architecture", {})
    config = ViTMSNConfig(hidden_size=a.get("hidden_size", hidden), num_hidden_layers=a.get("num_hidden_layers", layers),
                          num_attention_heads=a.get("num_attention_heads", heads),
                          intermediate_size=a.get("intermediate_size", intermediate), image_size=data["rand_size"],
                          patch_size=a.get("patch_size", patch), num_channels=channels, attn_implementation=attention)
    encoder = ViTMSNModel(config).train()
    head = projection_head(config.hidden_size, meta["hidden_dim"], meta["output_dim"], torch.Generator().manual_seed(0)).train()
    prototypes = torch.nn.Parameter(torch.randn(criterion["num_proto"], meta["output_dim"]) * 0.1)
    target_encoder, target_head = copy.deepcopy(encoder), copy.deepcopy(head)
    for p in list(target_encoder.parameters()) + list(target_head.parameters()):
        p.requires_grad_(False)
    named = list(encoder.named_parameters()) + [("fc." + n, p) for n, p in head.named_parameters()]
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in named if p.ndim > 1 and "bias" not in n], "weight_decay": optimization["weight_decay"]},
        {"params": [p for n, p in named if p.ndim <= 1 or "bias" in n], "weight_decay": 0.0},
        {"params": [prototypes], "weight_decay": 0.0}], lr=optimization["lr"])
    anchor_params = [p for _, p in named]
    target_params = list(target_encoder.parameters()) + list(target_head.parameters())

    batch, focal_views = criterion["batch_size"], data["focal_views"]
    size, focal = data["rand_size"], data["focal_size"]
    patches = (size // config.patch_size) ** 2
    kept = int(patches * (1 - data.get("patch_drop", 0.15)))
    target = torch.randn(batch, channels, size, size)
    anchor = torch.randn(batch, channels, size, size)
    focal_pixels = torch.randn(focal_views * batch, channels, focal, focal) if focal_views else None

    def step():
        with torch.no_grad():
            targets = target_head(cls_after_layernorm(target_encoder, target))
        anchors = [head(cls_after_layernorm(encoder, anchor, keep=torch.randperm(patches)[:kept]))]
        if focal_pixels is not None:
            anchors.append(head(cls_after_layernorm(encoder, focal_pixels, interpolate=True)))
        loss = msn_loss(torch.cat(anchors), targets, prototypes, criterion)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(anchor_params, optimization.get("clip_grad", 3.0))
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            torch._foreach_mul_(target_params, 0.996)
            torch._foreach_add_(target_params, anchor_params, alpha=0.004)
    return batch, step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", action="append", help="pretraining configs (JSON)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--binary", default=ROOT / ".build" / "release" / "vitmsn")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'config':<34}{'batch':>6}{'Swift':>9}{'torch sdpa':>12}{'torch eager':>13}{'ratio':>8}   (images/s per MSN step)")
    for config in args.config or [ROOT / "configs" / "fashion_mnist_msn.json"]:
        steps = {a: torch_step(config, a) for a in ("sdpa", "eager")}
        batch = steps["sdpa"][0]
        m = swift_against_torch(args.binary, ["--msn", config], {a: step for a, (_, step) in steps.items()}, batch, args.rounds, args.seconds)
        print(f"{Path(config).name:<34}{batch:>6}{m['swift']:>9.2f}{m['sdpa']:>12.2f}{m['eager']:>13.2f}"
              f"{m['swift'] / max(m['sdpa'], m['eager']):>7.2f}×")


if __name__ == "__main__":
    main()
