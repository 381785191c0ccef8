"""Writes the MSN step parity fixtures under Tests/Fixtures/msn: a tiny random encoder (Transformers model
directory) with a projection head and prototypes (`msn_head.safetensors`), the views of one step, a config,
and what a PyTorch implementation of the step written from the official code (`src/losses.py`,
`src/deit.py`, `src/msn_train.py`) computes: the loss terms, the sharpened Sinkhorn targets and the gradient
of every trainable tensor.
"""
import copy
import json
import math
import shutil
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import ViTMSNConfig, ViTMSNModel

from make_fixtures import randomize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures" / "msn"


def projection_head(dim, hidden, out, generator):
    head = torch.nn.Sequential(OrderedDict([
        ("fc1", torch.nn.Linear(dim, hidden)), ("bn1", torch.nn.BatchNorm1d(hidden)), ("gelu1", torch.nn.GELU()),
        ("fc2", torch.nn.Linear(hidden, hidden)), ("bn2", torch.nn.BatchNorm1d(hidden)), ("gelu2", torch.nn.GELU()),
        ("fc3", torch.nn.Linear(hidden, out))]))
    with torch.no_grad():
        for name, p in head.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if "weight" in name and "bn" not in name else 0.1)
                    + (1.0 if name.startswith("bn") and name.endswith("weight") else 0.0))
    return head


def cls_after_layernorm(encoder, pixels, keep=None, interpolate=False):
    """deit.py's forward: embeddings (+ interpolated positions), CLS + the kept patches, blocks, norm, CLS."""
    embeddings = encoder.embeddings(pixels, interpolate_pos_encoding=interpolate)
    if keep is not None:
        embeddings = torch.cat([embeddings[:, :1], embeddings[:, 1:][:, keep]], dim=1)
    return encoder.layernorm(encoder.encoder(embeddings).last_hidden_state)[:, 0]


def sinkhorn(q, iterations=3):
    q = q.T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def msn_loss(anchors, targets, prototypes, c):
    def snn(query, temperature):
        return F.softmax(F.normalize(query) @ F.normalize(prototypes).T / temperature, dim=1)
    probs = snn(anchors, c["temperature"])
    with torch.no_grad():
        t = snn(targets, c["temperature"]) ** (1.0 / c["final_sharpen"])
        t = t / t.sum(dim=1, keepdim=True)
        if c["use_sinkhorn"]:
            t = sinkhorn(t)
        repeated = torch.cat([t] * (len(anchors) // len(targets)))
    ploss = torch.mean(torch.sum(torch.log(probs ** (-repeated)), dim=1))
    average = probs.mean(dim=0)
    rloss = -torch.sum(torch.log(average ** (-average))) + math.log(len(prototypes))
    sloss = torch.mean(torch.sum(torch.log(probs ** (-probs)), dim=1))
    return ploss + c["memax_weight"] * rloss + c["ent_weight"] * sloss, ploss, rloss, sloss, t


def write_case(name, criterion, focal_views, seed):
    g = torch.Generator().manual_seed(seed)
    config = ViTMSNConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                          image_size=16, patch_size=4, num_channels=3, layer_norm_eps=1e-6)
    config._attn_implementation = "eager"
    encoder = randomize(ViTMSNModel(config), g).train()
    head = projection_head(16, 32, 8, g).train()
    prototypes = torch.nn.Parameter(torch.empty(12, 8).uniform_(-8 ** -0.5, 8 ** -0.5, generator=g))
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    encoder.save_pretrained(directory)
    save_file({**{f"fc.{k}": v.contiguous() for k, v in head.state_dict().items() if "num_batches" not in k},
               "prototypes": prototypes.detach().clone()}, directory / "msn_head.safetensors")
    (directory / "msn_config.json").write_text(json.dumps({"criterion": criterion}, indent=1))

    batch = 4
    views = {"target": torch.randn(batch, 3, 16, 16, generator=g), "anchor": torch.randn(batch, 3, 16, 16, generator=g),
             "keep": torch.randperm(16, generator=g)[:10]}
    if focal_views:
        views["focal"] = torch.randn(focal_views * batch, 3, 8, 8, generator=g)
    target_encoder, target_head = copy.deepcopy(encoder), copy.deepcopy(head)
    with torch.no_grad():
        targets = target_head(cls_after_layernorm(target_encoder, views["target"]))
    anchors = [head(cls_after_layernorm(encoder, views["anchor"], keep=views["keep"]))]
    if focal_views:
        anchors.append(head(cls_after_layernorm(encoder, views["focal"], interpolate=True)))
    loss, ploss, rloss, sloss, t = msn_loss(torch.cat(anchors), targets, prototypes, criterion)
    loss.backward()
    save_file({k: v.contiguous() for k, v in views.items()}, directory / "views.safetensors")
    grads = {f"grad.{n}": p.grad for n, p in encoder.named_parameters()}
    grads.update({f"grad.fc.{n}": p.grad for n, p in head.named_parameters()})
    grads["grad.prototypes"] = prototypes.grad
    expected = {"loss": loss, "ploss": ploss, "rloss": rloss, "sloss": sloss, "targets": t, **grads}
    save_file({k: v.detach().reshape(v.shape).contiguous() for k, v in expected.items()}, directory / "expected.safetensors")
    return dict(name=name, focal_views=focal_views, **criterion)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    torch.manual_seed(0)
    released = dict(temperature=0.1, final_sharpen=0.25, memax_weight=1.0, ent_weight=0.0, use_sinkhorn=True)
    cases = [write_case("sinkhorn_focal", released, focal_views=2, seed=1),
             write_case("no_sinkhorn_entropy", {**released, "use_sinkhorn": False, "memax_weight": 5.0, "ent_weight": 0.3},
                        focal_views=0, seed=2)]
    (OUT / "cases.json").write_text(json.dumps(dict(loss_atol=1e-5, gradient_rtol=1e-4, cases=cases), indent=1))


if __name__ == "__main__":
    main()
