"""Writes the training parity fixtures under Tests/Fixtures/training: tiny random-weight models, batches, and
what PyTorch autograd computes for them (every parameter gradient and the input gradient), plus ten optimiser
steps (AdamW and SGD with momentum, Transformers' schedulers, clipping, gradient accumulation) from the same
start on the same batches.

Run through `make fixtures` (pinned stack: scripts/requirements.txt). The Swift tests read
Tests/Fixtures/training/cases.json.
"""
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import ViTMSNConfig, ViTMSNForImageClassification, ViTMSNModel, get_scheduler

from make_fixtures import randomize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures" / "training"
TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            image_size=8, patch_size=4, num_channels=3, layer_norm_eps=1e-6)
NO_DECAY = ("bias", "layernorm", "cls_token", "position_embeddings")
CASES = []


def build(name, cls=ViTMSNForImageClassification, seed=0, **overrides):
    config = ViTMSNConfig(**{**TINY, **overrides})
    config._attn_implementation = "eager"
    model = randomize(cls(config), torch.Generator().manual_seed(seed))
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    return model


def save_case(name, model_name, kind, tensors, **info):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, OUT / f"{name}.safetensors")
    CASES.append(dict(name=name, model=model_name, kind=kind, **info))


def gradients(model):
    return {f"grad.{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}


def classifier_case(name, model_name, model, pixels, labels, interpolate=False):
    pixels = pixels.clone().requires_grad_(True)
    model.zero_grad()
    out = model(pixel_values=pixels, labels=labels, interpolate_pos_encoding=interpolate)
    out.loss.backward()
    tensors = dict(pixel_values=pixels, labels=labels, loss=out.loss, logits=out.logits,
                   **{"grad.pixel_values": pixels.grad}, **gradients(model))
    save_case(name, model_name, "classifier", tensors, interpolate_pos_encoding=interpolate,
              problem_type=model.config.problem_type)


def keep_case(g):
    """The backbone with MSN's patch dropping: embeddings, then the CLS token and the kept patches only."""
    model = build("backbone", cls=ViTMSNModel, seed=3)
    pixels = torch.randn(3, 3, 8, 8, generator=g).requires_grad_(True)
    keep = torch.stack([torch.randperm(4, generator=g)[:3] for _ in range(3)])
    weights = torch.randn(3, 4, 16, generator=g)
    embeddings = model.embeddings(pixels)
    kept = torch.cat([embeddings[:, :1], torch.gather(embeddings[:, 1:], 1, keep[..., None].expand(-1, -1, 16))], 1)
    last = model.layernorm(model.encoder(kept).last_hidden_state)
    loss = (last * weights).sum()
    loss.backward()
    save_case("grad_keep", "backbone", "backbone", dict(
        pixel_values=pixels, keep=keep, output_weights=weights, last_hidden_state=last, loss=loss,
        **{"grad.pixel_values": pixels.grad}, **gradients(model)))


def decay_groups(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in NO_DECAY)]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in NO_DECAY)]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=rest, weight_decay=0.0)]


def optimizer_case(name, g, optimizer_name, scheduler, steps=10, accumulation=2, micro_batch=2, max_grad_norm=1.0):
    # No query/key/value biases: the key bias's true gradient is zero, and Adam turns the rounding noise it
    # gets instead into full-size steps that no two implementations share.
    model = build(f"{name}_start", seed=5, num_labels=4, qkv_bias=False)
    lr, weight_decay, warmup = 2e-3, 0.05, 3
    if optimizer_name == "adamw":
        optimizer = torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        optimizer = torch.optim.SGD(decay_groups(model, weight_decay), lr=lr * 10, momentum=0.9)
    schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    pixels = torch.randn(steps * accumulation * micro_batch, 3, 8, 8, generator=g)
    labels = torch.randint(0, 4, (steps * accumulation * micro_batch,), generator=g)
    learning_rates, losses = [], []
    for step in range(steps):
        for micro in range(accumulation):
            first = (step * accumulation + micro) * micro_batch
            loss = model(pixel_values=pixels[first:first + micro_batch], labels=labels[first:first + micro_batch]).loss
            (loss / accumulation).backward()
            losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        learning_rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    tensors = dict(pixel_values=pixels, labels=labels, learning_rates=torch.tensor(learning_rates),
                   losses=torch.tensor(losses), **{f"final.{n}": p for n, p in model.named_parameters()})
    save_case(name, f"{name}_start", "optimizer", tensors, optimizer=optimizer_name, scheduler=scheduler,
              steps=steps, accumulation=accumulation, micro_batch=micro_batch, max_grad_norm=max_grad_norm,
              learning_rate=optimizer.defaults["lr"], weight_decay=weight_decay, warmup_steps=warmup,
              momentum=0.9 if optimizer_name == "sgd" else None)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    model = build("classifier", num_labels=5).train()
    classifier_case("grad_classifier", "classifier", model, torch.randn(3, 3, 8, 8, generator=g),
                    torch.tensor([0, 4, 2]))
    model.config.problem_type = None
    classifier_case("grad_interpolated", "classifier", model, torch.randn(2, 3, 12, 16, generator=g),
                    torch.tensor([1, -100]), interpolate=True)
    model = build("regression_gelu_new", seed=1, num_labels=1, hidden_act="gelu_new").train()
    classifier_case("grad_regression", "regression_gelu_new", model, torch.randn(3, 3, 8, 8, generator=g),
                    torch.randn(3, generator=g))
    for act in ("silu", "relu", "quick_gelu"):
        model = build(f"multilabel_{act}", seed=2, num_labels=3, hidden_act=act).train()
        classifier_case(f"grad_multilabel_{act}", f"multilabel_{act}", model,
                        torch.randn(2, 3, 8, 8, generator=g), (torch.rand(2, 3, generator=g) > 0.5).float())
    keep_case(g)
    optimizer_case("adamw_cosine", g, "adamw", "cosine")
    optimizer_case("sgd_linear", g, "sgd", "linear")
    (OUT / "cases.json").write_text(json.dumps(dict(
        note="PyTorch autograd and torch.optim on tiny random models; see scripts/make_training_fixtures.py",
        gradient_rtol=1e-4, optimizer_rtol=1e-4, cases=CASES), indent=1))


if __name__ == "__main__":
    main()
