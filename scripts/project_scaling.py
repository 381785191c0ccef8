#!/usr/bin/env python3
"""Projected data-parallel scaling of MSN pretraining, on paper, from measured inputs (standard library only).

Per step and node: compute = b images x FLOPs per image / the achieved rate (measured on the default model:
`--images-per-second` of one 2-core node); the gradient all-reduce, a ring, moves 2(N-1)/N x the encoder's
gradient bytes over the link plus 2(N-1) message latencies; `--hidden` of it overlaps the backward (measured
by scripts/bench_mpi.py). This implementation also gathers every image's CLS tokens ((2+F) rows of D floats)
to every node and runs the projection head on the whole global batch there, which keeps the run bit-identical
to one process but costs each node the head of all N x b images: both are in the table.
Usage: scripts/project_scaling.py --images-per-second 164 --hidden 0.3
"""
import argparse

MODELS = {  # hidden, layers, mlp, patch, image, focal size, focal views, head hidden, head out, per-node batch
    "default (Fashion-MNIST)": dict(d=192, l=4, m=768, p=7, image=28, focal=14, views=4, hh=512, ho=128, b=64),
    "ViT-S/16": dict(d=384, l=12, m=1536, p=16, image=224, focal=96, views=10, hh=2048, ho=256, b=32),
    "ViT-B/16": dict(d=768, l=12, m=3072, p=16, image=224, focal=96, views=10, hh=2048, ho=256, b=32),
}


def encoder_parameters(c):
    d, m = c["d"], c["m"]
    block = 4 * d * d + 4 * d + 2 * d * m + m + d + 4 * d  # attention, MLP, two LayerNorms
    tokens = (c["image"] // c["p"]) ** 2 + 1
    return c["l"] * block + 3 * c["p"] ** 2 * d + d + d + tokens * d + 2 * d  # + patch embedding, CLS, positions, final LN


def encoder_flops(c, tokens):  # forward, per image
    d, m = c["d"], c["m"]
    return c["l"] * tokens * (2 * 4 * d * d + 2 * 2 * d * m + 2 * 2 * tokens * d)


def step_flops(c, patch_drop=0.15):  # per image: target forward; anchor and focal forward + backward (x3)
    grid = (c["image"] // c["p"]) ** 2
    target = encoder_flops(c, grid + 1)
    anchor = encoder_flops(c, int(grid * (1 - patch_drop)) + 1)
    focal = c["views"] * encoder_flops(c, (c["focal"] // c["p"]) ** 2 + 1)
    return target + 3 * (anchor + focal)


def head_flops(c):  # per image, on the global batch: target rows forward, anchor rows forward + backward
    row = 2 * (c["d"] * c["hh"] + c["hh"] * c["hh"] + c["hh"] * c["ho"])
    return row * (1 + 3 * (1 + c["views"]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images-per-second", type=float, required=True, help="one node's measured rate on the default model")
    parser.add_argument("--hidden", type=float, required=True, help="fraction of the all-reduce the backward hides")
    parser.add_argument("--latency-us", type=float, default=50, help="per-message latency")
    a = parser.parse_args()
    default = MODELS["default (Fashion-MNIST)"]
    rate = a.images_per_second * (step_flops(default) + head_flops(default) * 2) / 2  # 2 nodes' worth of head per image
    print(f"achieved rate: {rate / 1e9:.0f} GFLOP/s per node (from {a.images_per_second:g} images/s on the default model)\n")
    print("| model | encoder parameters | gradient bytes all-reduced per step | CLS bytes gathered per image |")
    print("|---|---|---|---|")
    for name, c in MODELS.items():
        p = encoder_parameters(c)
        print(f"| {name} | {p / 1e6:.2f} M | {4 * p / 1e6:.1f} MB | {4 * (2 + c['views']) * c['d'] / 1e3:.1f} kB |")
    print(f"\nprojected efficiency (per-node batch b fixed, ring all-reduce, {100 * a.hidden:.0f} % of it hidden, "
          f"{a.latency_us:g} µs per message): gradients only / with the replicated head and CLS gather")
    print("| model | b | link | 8 nodes | 64 nodes | 256 nodes |")
    print("|---|---|---|---|---|---|")
    for name, c in MODELS.items():
        compute = c["b"] * step_flops(c) / rate
        gradient = 4 * encoder_parameters(c)
        for gbit in (10, 100):
            bandwidth = gbit * 1e9 / 8
            cells = []
            for n in (8, 64, 256):
                ring = lambda size: 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * a.latency_us * 1e-6
                exposed = (1 - a.hidden) * ring(gradient)
                gathered = 4 * (2 + c["views"]) * c["d"] * c["b"] * n
                head = n * c["b"] * head_flops(c) / rate + ring(gathered)
                cells.append(f"{100 * compute / (compute + exposed):.0f} % / {100 * compute / (compute + exposed + head):.0f} %")
            print(f"| {name} | {c['b']} | {gbit} Gbit/s | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
