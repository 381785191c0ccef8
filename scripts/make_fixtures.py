"""Writes the parity fixtures under Tests/Fixtures: tiny random-weight ViT-MSN model directories, inputs in
the `vitmsn forward` format, and the outputs Transformers computes for them (fp32, CPU, eager attention).

Run through `make fixtures` (pinned stack: scripts/requirements.txt). The Swift tests read
Tests/Fixtures/cases.json and compare with the tolerances stated there.
"""
import json
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import ViTImageProcessor, ViTMSNConfig, ViTMSNForImageClassification, ViTMSNModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            image_size=16, patch_size=4, num_channels=3, layer_norm_eps=1e-6)


def randomize(model, generator):
    """Weights far from Transformers' init (zero CLS/positions, unit LayerNorm) so every parameter matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("cls_token", "position_embeddings", "mask_token")):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            elif "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + torch.randn(p.shape, generator=generator) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in ** 0.5)
    return model.eval()


def build(name, cls=ViTMSNModel, seed=0, use_mask_token=False, extra_config=None, **overrides):
    config = ViTMSNConfig(**{**TINY, **overrides})
    config._attn_implementation = "eager"
    for key, value in (extra_config or {}).items():
        setattr(config, key, value)
    model = cls(config, use_mask_token=True) if use_mask_token else cls(config)
    randomize(model, torch.Generator().manual_seed(seed))
    directory = OUT / "models" / name
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    return model


def run(model, inputs, output_hidden_states=False, output_attentions=False, interpolate_pos_encoding=False):
    kwargs = dict(pixel_values=inputs["pixel_values"], output_hidden_states=output_hidden_states,
                  output_attentions=output_attentions)
    if interpolate_pos_encoding:
        kwargs["interpolate_pos_encoding"] = True
    if "bool_masked_pos" in inputs:
        kwargs["bool_masked_pos"] = inputs["bool_masked_pos"].bool()
    if "head_mask" in inputs:
        kwargs["head_mask"] = inputs["head_mask"]
    if "labels" in inputs:
        kwargs["labels"] = inputs["labels"]
    with torch.no_grad():
        out = model(**kwargs)
    expected = {}
    if isinstance(model, ViTMSNForImageClassification):
        expected["logits"] = out.logits
        if out.loss is not None:
            expected["loss"] = out.loss
    else:
        expected["last_hidden_state"] = out.last_hidden_state
    for i, h in enumerate(out.hidden_states or ()):
        expected[f"hidden_states.{i}"] = h
    for i, a in enumerate(out.attentions or ()):
        expected[f"attentions.{i}"] = a
    return expected


CASES = []


def case(name, model_name, model, inputs, **flags):
    expected = run(model, inputs, **flags)
    directory = OUT / "cases"
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in inputs.items()}, directory / f"{name}.inputs.safetensors")
    save_file({k: v.contiguous() for k, v in expected.items()}, directory / f"{name}.expected.safetensors")
    CASES.append(dict(name=name, model=model_name, **flags))


def pixels(generator, batch=2, channels=3, height=16, width=16):
    return torch.randn(batch, channels, height, width, generator=generator)


def write_msn_checkpoint(g):
    """An original-MSN-style training checkpoint (facebookresearch/msn layout: DDP `module.` keys, fused qkv,
    projection head fc.*, prototypes, optimizer state) of a tiny ViT, and what Transformers computes with
    the same weights. Hidden size 64 so that heads = hidden / 64, as in every released MSN model."""
    model = build("msn_reference", seed=12, hidden_size=64, num_attention_heads=1, num_hidden_layers=1)
    shutil.rmtree(OUT / "models" / "msn_reference")
    sd = model.state_dict()
    msn = {"module.cls_token": sd["embeddings.cls_token"], "module.pos_embed": sd["embeddings.position_embeddings"],
           "module.patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "module.patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "module.norm.weight": sd["layernorm.weight"], "module.norm.bias": sd["layernorm.bias"]}
    for i in range(model.config.num_hidden_layers):
        hf, orig = f"encoder.layer.{i}.", f"module.blocks.{i}."
        for kind in ["weight", "bias"]:
            msn[orig + f"norm1.{kind}"] = sd[hf + f"layernorm_before.{kind}"]
            msn[orig + f"norm2.{kind}"] = sd[hf + f"layernorm_after.{kind}"]
            msn[orig + f"attn.proj.{kind}"] = sd[hf + f"attention.output.dense.{kind}"]
            msn[orig + f"mlp.fc1.{kind}"] = sd[hf + f"intermediate.dense.{kind}"]
            msn[orig + f"mlp.fc2.{kind}"] = sd[hf + f"output.dense.{kind}"]
            msn[orig + f"attn.qkv.{kind}"] = torch.cat([sd[hf + f"attention.attention.{p}.{kind}"] for p in ["query", "key", "value"]])
    head = {"fc.fc1.weight": torch.randn(48, 64, generator=g), "fc.fc1.bias": torch.zeros(48),
            "fc.bn1.weight": torch.ones(48), "fc.bn1.bias": torch.zeros(48), "fc.bn1.running_mean": torch.zeros(48),
            "fc.bn1.running_var": torch.ones(48), "fc.bn1.num_batches_tracked": torch.tensor(5),
            "fc.fc3.weight": torch.randn(16, 48, generator=g), "fc.fc3.bias": torch.zeros(16)}
    msn.update({"module." + k: v for k, v in head.items()})
    checkpoint = {"encoder": msn, "target_encoder": msn, "prototypes": torch.randn(10, 16, generator=g),
                  "opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, generator=g)}},
                          "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.04,
                                            "amsgrad": False, "params": [0, 1]}]},
                  "epoch": 7, "loss": 3.25, "batch_size": 64, "world_size": 1, "lr": 1e-3, "temperature": 0.1, "amp": None}
    (OUT / "torch").mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, OUT / "torch" / "msn_tiny.pth.tar")
    inputs = {"pixel_values": pixels(g)}
    save_file(inputs, OUT / "cases" / "msn_checkpoint.inputs.safetensors")
    save_file({k: v.contiguous() for k, v in run(model, inputs).items()}, OUT / "cases" / "msn_checkpoint.expected.safetensors")


def write_hostile_checkpoints(directory):
    """Small torch.save files that must be refused, each for one reason the Swift tests check."""
    import io
    import os
    import zipfile
    directory.mkdir(parents=True, exist_ok=True)
    valid = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, valid)
    (directory / "valid.bin").write_bytes(valid.getvalue())

    def rewrite(name, replace):
        """The valid archive with some entries' contents replaced (zipfile writes matching CRCs)."""
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(valid.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                for suffix, new in replace.items():
                    if info.filename.endswith(suffix):
                        data = new(data)
                dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0)), data)
        (directory / name).write_bytes(out.getvalue())

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    evil = io.BytesIO()
    torch.save({"w": Exploit()}, evil)
    (directory / "forbidden_global.bin").write_bytes(evil.getvalue())
    rewrite("short_storage.bin", {"/data/0": lambda data: data[:8]})
    rewrite("recursion_bomb.bin", {"data.pkl": lambda _: b"\x80\x02" + b"]" * 1000 + b"a" * 999 + b"."})
    rewrite("unknown_opcode.bin", {"data.pkl": lambda _: b"\x80\x02cos\nsystem\n(S'id'\ntR."[:2] + b"i" + b"os\nsystem\n."})
    # Numbers no storage or view can have, in the pickle of {"w": arange(6)} (numel, then size and stride).
    def long1(value):
        return b"\x8a\x08" + value.to_bytes(8, "little", signed=True)
    numel, view = b"K\x06t", b"K\x00K\x06\x85q\x08K\x01\x85"
    rewrite("huge_storage.bin", {"data.pkl": lambda data: data.replace(numel, long1(1 << 62) + b"t")})
    rewrite("huge_stride.bin", {"data.pkl": lambda data: data.replace(view, b"K\x00K\x06\x85q\x08" + long1((1 << 63) - 2) + b"\x85")})
    rewrite("huge_offset.bin", {"data.pkl": lambda data: data.replace(view, long1((1 << 63) - 2) + b"K\x06\x85q\x08K\x01\x85")})
    rewrite("huge_shape.bin", {"data.pkl": lambda data: data.replace(view, b"K\x00" + long1(1 << 40) + long1(1 << 40) + b"\x86q\x08K\x00K\x00\x86")})
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    (directory / "legacy.bin").write_bytes(legacy.getvalue())

    # MSN checkpoints whose shapes cannot describe a ViT: the architecture is read from them first.
    def msn(name, **shapes):
        encoder = {"module.patch_embed.proj.weight": torch.zeros(8, 3, 2, 2), "module.pos_embed": torch.zeros(1, 5, 8),
                   "module.blocks.0.mlp.fc1.weight": torch.zeros(16, 8)}
        encoder.update({"module." + key.replace("__", "."): value for key, value in shapes.items()})
        torch.save({"target_encoder": encoder}, directory / f"msn_{name}.pth.tar")
    msn("no_positions", pos_embed=torch.zeros(1, 0, 8))
    msn("flat_positions", pos_embed=torch.zeros(8))
    msn("scalar_patch", patch_embed__proj__weight=torch.tensor(1.0))
    msn("scalar_fc1", blocks__0__mlp__fc1__weight=torch.tensor(1.0))


def main():
    for owned in ["models", "cases"]:  # Tests/Fixtures/images belongs to make_image_fixtures.py
        shutil.rmtree(OUT / owned, ignore_errors=True)
    g = torch.Generator().manual_seed(1234)

    base = build("base", seed=1)
    case("base", "base", base, {"pixel_values": pixels(g)})
    case("base_outputs", "base", base, {"pixel_values": pixels(g, batch=3)},
         output_hidden_states=True, output_attentions=True)
    case("head_mask_per_head", "base", base,
         {"pixel_values": pixels(g), "head_mask": torch.tensor([1.0, 0.0, 1.0, 1.0])}, output_attentions=True)
    case("head_mask_per_layer", "base", base,
         {"pixel_values": pixels(g), "head_mask": torch.tensor([[1.0, 0.5, 0.0, 1.0], [0.0, 1.0, 2.0, 1.0]])},
         output_attentions=True, output_hidden_states=True)
    # Interpolated position embeddings: non-square, same patch count but non-square (still interpolated),
    # square with the trained size (the early return), larger, and sizes that are not multiples of the patch.
    for name, (h, w) in {"interp_12x24": (12, 24), "interp_8x32": (8, 32), "interp_16x16": (16, 16),
                         "interp_32x32": (32, 32), "interp_26x30": (26, 30)}.items():
        case(name, "base", base, {"pixel_values": pixels(g, batch=1, height=h, width=w)},
             interpolate_pos_encoding=True, output_hidden_states=True)

    masked = build("mask_token", seed=2, use_mask_token=True)
    mask = torch.rand(2, 16, generator=g) < 0.4
    case("mask_bool", "mask_token", masked, {"pixel_values": pixels(g), "bool_masked_pos": mask})
    case("mask_u8", "mask_token", masked, {"pixel_values": pixels(g), "bool_masked_pos": (~mask).to(torch.uint8)})
    case("mask_i64_interp", "mask_token", masked,
         {"pixel_values": pixels(g, height=12, width=20),
          "bool_masked_pos": (torch.rand(2, 15, generator=g) < 0.5).to(torch.int64)}, interpolate_pos_encoding=True)

    labels = {f"{i}": name for i, name in enumerate(["ankle boot", "bag", "coat", "dress", "pullover"])}
    single = build("classifier_single", ViTMSNForImageClassification, seed=3, num_hidden_layers=1,
                   id2label=labels, label2id={v: int(k) for k, v in labels.items()},
                   extra_config={"my_custom_field": {"kept": [1, 2, 3]}})
    case("classifier_single", "classifier_single", single,
         {"pixel_values": pixels(g, batch=4), "labels": torch.tensor([3, -100, 0, 4])},
         output_hidden_states=True)
    case("classifier_no_labels", "classifier_single", single, {"pixel_values": pixels(g)})

    regression = build("classifier_regression", ViTMSNForImageClassification, seed=4, num_hidden_layers=1, num_labels=1)
    case("classifier_regression", "classifier_regression", regression,
         {"pixel_values": pixels(g, batch=3), "labels": torch.randn(3, generator=g)})
    regression3 = build("classifier_regression3", ViTMSNForImageClassification, seed=5, num_hidden_layers=1,
                        num_labels=3, problem_type="regression")
    case("classifier_regression3", "classifier_regression3", regression3,
         {"pixel_values": pixels(g), "labels": torch.randn(2, 3, generator=g)})
    multi = build("classifier_multi", ViTMSNForImageClassification, seed=6, num_hidden_layers=1, num_labels=4)
    case("classifier_multi", "classifier_multi", multi,
         {"pixel_values": pixels(g, batch=3), "labels": (torch.rand(3, 4, generator=g) < 0.5).float()})
    identity = build("classifier_identity", ViTMSNForImageClassification, seed=7, num_hidden_layers=1, num_labels=0)
    case("classifier_identity", "classifier_identity", identity, {"pixel_values": pixels(g)})

    pair = build("pair_sizes", seed=8, num_hidden_layers=1, image_size=[16, 24], patch_size=[4, 4])
    case("pair_sizes", "pair_sizes", pair, {"pixel_values": pixels(g, height=16, width=24)})
    gray = build("one_channel", seed=9, num_hidden_layers=1, num_channels=1, qkv_bias=False)
    case("one_channel", "one_channel", gray, {"pixel_values": pixels(g, channels=1)})
    for act in ["gelu_new", "quick_gelu", "relu", "silu"]:
        model = build(f"act_{act}", seed=10, num_hidden_layers=1, hidden_act=act)
        case(f"act_{act}", f"act_{act}", model, {"pixel_values": pixels(g)})

    # The base model in other storage formats: half-precision files (expected outputs from the rounded
    # weights, computed in fp32) and a sharded safetensors set.
    for dtype, label in [(torch.float16, "f16"), (torch.bfloat16, "bf16")]:
        rounded = build("base", seed=1)
        rounded.to(dtype).save_pretrained(OUT / "models" / f"base_{label}")
        rounded.float()
        case(f"base_{label}", f"base_{label}", rounded, {"pixel_values": pixels(g)})
    base.save_pretrained(OUT / "models" / "base_sharded", max_shard_size="30KB")
    case("base_sharded", "base_sharded", base, {"pixel_values": pixels(g)})

    # PyTorch pickles (`save_pretrained(safe_serialization=False)`) of the same models, and a hand-made state
    # dict whose tensors are strided views and share storages, as torch.save keeps them.
    base.save_pretrained(OUT / "models" / "base_bin", safe_serialization=False)
    case("base_bin", "base_bin", base, {"pixel_values": pixels(g)})
    base.save_pretrained(OUT / "models" / "base_bin_sharded", safe_serialization=False, max_shard_size="30KB")
    case("base_bin_sharded", "base_bin_sharded", base, {"pixel_values": pixels(g)})
    single.save_pretrained(OUT / "models" / "classifier_bin", safe_serialization=False)
    case("classifier_bin", "classifier_bin", single, {"pixel_values": pixels(g), "labels": torch.tensor([1, 4])})
    half = build("base", seed=1)
    half.to(torch.float16).save_pretrained(OUT / "models" / "base_f16_bin", safe_serialization=False)
    half.float()
    case("base_f16_bin", "base_f16_bin", half, {"pixel_values": pixels(g)})
    strided = {k: v.clone() for k, v in base.state_dict().items()}
    q = "encoder.layer.0.attention.attention.query.weight"
    strided[q] = strided[q].t().contiguous().t()  # a transposed view: stride (1, 32)
    packed = torch.cat([strided["layernorm.weight"], strided["layernorm.bias"]])
    strided["layernorm.weight"], strided["layernorm.bias"] = packed[:32], packed[32:]  # one storage, two offsets
    directory = OUT / "models" / "base_bin_strided"
    directory.mkdir(parents=True)
    base.config.save_pretrained(directory)
    torch.save(strided, directory / "pytorch_model.bin")
    case("base_bin_strided", "base_bin_strided", base, {"pixel_values": pixels(g)})
    write_hostile_checkpoints(OUT / "torch")
    write_msn_checkpoint(g)

    # Image processors: the current form written by Transformers, and the legacy form the released
    # facebook/vit-msn-* checkpoints ship (ViTFeatureExtractor, "size": int, ImageNet mean/std).
    ViTImageProcessor(size={"height": 16, "width": 16}, resample=2, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(OUT / "models" / "classifier_single")
    legacy = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
              "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2, "size": 16}
    (OUT / "models" / "base" / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2, sort_keys=True) + "\n")

    manifest = dict(
        generator=f"scripts/make_fixtures.py, transformers {transformers.__version__}, torch {torch.__version__}",
        tolerance=dict(atol=1e-5), cases=CASES)
    (OUT / "cases.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT}")


if __name__ == "__main__":
    main()
