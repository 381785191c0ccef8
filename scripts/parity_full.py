"""Full-size parity, on demand (`make parity`): random-weight models of the vit-msn-small and vit-msn-base
shapes are built with Transformers (fp32, eager attention), run through `vitmsn forward`, and every hidden
state is compared. Then `vitmsn convert` rewrites each model and Transformers must load the Swift-written
directory with from_pretrained and reproduce its own outputs.

Prints one table row per checked tensor group with the maximum absolute error; fails above --atol.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import ViTMSNConfig, ViTMSNForImageClassification, ViTMSNModel

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"small": dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536), "base": {}}


def randomize(model, generator):
    """Transformers' init plus perturbed LayerNorms and non-zero CLS/positions, so that every tensor matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("cls_token", "position_embeddings")):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            elif "layernorm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + torch.randn(p.shape, generator=generator) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return model.eval()


def vitmsn(*args):
    subprocess.run([str(ROOT / ".build" / "release" / "vitmsn"), *map(str, args)], check=True)


def check_conversions(out):
    """`vitmsn convert` from a pytorch_model.bin and from an original MSN checkpoint: Transformers loads the
    written directories and reproduces the source model's outputs."""
    generator = torch.Generator().manual_seed(3)
    model = randomize(ViTMSNModel(ViTMSNConfig(**PRESETS["small"], attn_implementation="eager")), generator)
    model.save_pretrained(out / "small-bin", safe_serialization=False)
    vitmsn("convert", out / "small-bin", out / "small-bin-swift", "--dtype", "f32", "--overwrite-output-dir")
    pixels = torch.randn(2, 3, 224, 224, generator=generator)
    worst = 0.0
    with torch.no_grad():
        reloaded = ViTMSNModel.from_pretrained(out / "small-bin-swift", attn_implementation="eager").eval()
        worst = (reloaded(pixel_values=pixels).last_hidden_state - model(pixel_values=pixels).last_hidden_state).abs().max().item()
    print(f"| small | pytorch_model.bin → `vitmsn convert` → Transformers | last_hidden_state | {worst:.2e} |")
    fixture = ROOT / "Tests" / "Fixtures"
    vitmsn("convert", fixture / "torch" / "msn_tiny.pth.tar", out / "msn-tiny-swift", "--overwrite-output-dir")
    reloaded = ViTMSNModel.from_pretrained(out / "msn-tiny-swift", attn_implementation="eager").eval()
    inputs = load_file(fixture / "cases" / "msn_checkpoint.inputs.safetensors")
    expected = load_file(fixture / "cases" / "msn_checkpoint.expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        error = (reloaded(pixel_values=inputs["pixel_values"]).last_hidden_state - expected).abs().max().item()
    print(f"| tiny | original MSN .pth.tar → `vitmsn convert` → Transformers | last_hidden_state | {error:.2e} |")
    return max(worst, error)


def check_embed_on_photos(out):
    """Image files to embeddings end to end: `vitmsn embed` against transformers' load_image +
    ViTImageProcessor (PIL path, the released checkpoints' legacy config) + ViTMSNModel."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import load_image
    directory = out / "small"
    legacy = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
              "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2, "size": 224}
    (directory / "preprocessor_config.json").write_text(json.dumps(legacy))
    photos = sorted(str(p) for p in (ROOT / "Tests" / "Fixtures" / "images").glob("*") if p.suffix in (".jpg", ".png"))
    vitmsn("embed", "--model", directory, *photos, "--output", out / "photos.embeddings.safetensors", "--batch-size", 8)
    swift = load_file(out / "photos.embeddings.safetensors")["embeddings"]
    processor = ViTImageProcessor.from_pretrained(directory)
    model = ViTMSNModel.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
        pixels = processor([load_image(p) for p in photos], return_tensors="pt")["pixel_values"]
        reference = model(pixel_values=pixels).last_hidden_state[:, 0]
    error = (swift - reference).abs().max().item()
    print(f"| small | {len(photos)} photos (JPEG/PNG), files → CLS embedding | embeddings | {error:.2e} |")
    return error


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "parity")
    args = parser.parse_args()
    worst_overall = 0.0
    print("| model | input | tensor | max abs error |\n|---|---|---|---|")
    for preset, sizes in PRESETS.items():
        generator = torch.Generator().manual_seed(0)
        config = ViTMSNConfig(**sizes, attn_implementation="eager")
        model = randomize(ViTMSNModel(config), generator)
        directory = args.out / preset
        model.save_pretrained(directory)
        cases = {"224x224": dict(pixel_values=torch.randn(2, 3, 224, 224, generator=generator)),
                 "160x256-interpolated": dict(pixel_values=torch.randn(1, 3, 160, 256, generator=generator),
                                              interpolate_pos_encoding=True)}
        for label, inputs in cases.items():
            with torch.no_grad():
                expected = model(**inputs, output_hidden_states=True)
            save_file({"pixel_values": inputs["pixel_values"]}, directory / f"{label}.inputs.safetensors")
            flags = ["--interpolate-pos-encoding"] if inputs.get("interpolate_pos_encoding") else []
            vitmsn("forward", "--model", directory, "--inputs", directory / f"{label}.inputs.safetensors",
                   "--output", directory / f"{label}.swift.safetensors", "--output-hidden-states", *flags)
            actual = load_file(directory / f"{label}.swift.safetensors")
            hidden = max((actual[f"hidden_states.{i}"] - h).abs().max().item() for i, h in enumerate(expected.hidden_states))
            last = (actual["last_hidden_state"] - expected.last_hidden_state).abs().max().item()
            worst_overall = max(worst_overall, hidden, last)
            print(f"| {preset} | {label} | hidden_states (all {len(expected.hidden_states)}) | {hidden:.2e} |")
            print(f"| {preset} | {label} | last_hidden_state | {last:.2e} |", flush=True)

        # Swift writes the model back; Transformers must load it and compute exactly what it computed before.
        for cls, saved in [(ViTMSNModel, model)]:
            converted = args.out / f"{preset}-swift"
            vitmsn("convert", directory, converted, "--overwrite-output-dir")
            reloaded = cls.from_pretrained(converted, attn_implementation="eager").eval()
            with torch.no_grad():
                pixels = cases["224x224"]["pixel_values"]
                difference = (reloaded(pixel_values=pixels).last_hidden_state - saved(pixel_values=pixels).last_hidden_state).abs().max().item()
            worst_overall = max(worst_overall, difference)
            print(f"| {preset} | written by `vitmsn convert`, loaded by Transformers | last_hidden_state | {difference:.2e} |")
        # A classifier directory written by Swift loads as ViTMSNForImageClassification with the same logits.
        classifier = randomize(ViTMSNForImageClassification(ViTMSNConfig(**sizes, num_labels=3, attn_implementation="eager")), generator)
        classifier.save_pretrained(args.out / f"{preset}-classifier")
        vitmsn("convert", args.out / f"{preset}-classifier", args.out / f"{preset}-classifier-swift", "--overwrite-output-dir")
        reloaded = ViTMSNForImageClassification.from_pretrained(args.out / f"{preset}-classifier-swift", attn_implementation="eager").eval()
        with torch.no_grad():
            pixels = cases["224x224"]["pixel_values"]
            difference = (reloaded(pixel_values=pixels).logits - classifier(pixel_values=pixels).logits).abs().max().item()
        worst_overall = max(worst_overall, difference)
        print(f"| {preset} | classifier written by `vitmsn convert`, loaded by Transformers | logits | {difference:.2e} |")
    worst_overall = max(worst_overall, check_embed_on_photos(args.out), check_conversions(args.out))
    print(f"\nworst error {worst_overall:.2e} (tolerance {args.atol})")
    sys.exit(0 if worst_overall <= args.atol else 1)


if __name__ == "__main__":
    main()
