"""Accuracy of the low-precision modes: `last_hidden_state` cosine to fp32 Transformers, per image, on 32
real photos (four crops each of the eight colour photos in the scikit-image wheel), for random-weight
ViT-S/16 and ViT-B/16 (Transformers' own initialisation). Swift's `--dtype f32|bf16|f16|int8` beside
PyTorch's and ONNX Runtime's dynamic int8, measured the same way. Prints the mean and the worst image.

    .venv/bin/python scripts/bench_int8_accuracy.py --preset small --preset base
"""
import argparse
import subprocess
import zipfile
from pathlib import Path

import onnxruntime
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import ViTImageProcessor, ViTMSNConfig, ViTMSNModel

from bench_peers import PRESETS, onnx_int8_session, torch_int8_model

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg", "hubble_deep_field.jpg",
          "motorcycle_left.png", "ihc.png"]


def photos(cache):
    """32 crops of real photos: the scikit-image 0.26.0 wheel from PyPI, fetched once."""
    wheels = sorted(cache.glob("scikit_image-0.26.0-*.whl"))
    if not wheels:
        subprocess.run(["pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(cache), "scikit-image==0.26.0"],
                       check=True, capture_output=True)
        wheels = sorted(cache.glob("scikit_image-0.26.0-*.whl"))
    crops = []
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in PHOTOS:
            with wheel.open(f"skimage/data/{name}") as file:
                image = Image.open(file).convert("RGB")
            w, h = image.size
            side = min(w, h)
            for i, (fx, fy, scale) in enumerate([(0.5, 0.5, 1.0), (0.0, 0.0, 0.6), (1.0, 1.0, 0.6), (0.3, 0.7, 0.45)]):
                s = int(side * scale)
                x, y = int((w - s) * fx), int((h - s) * fy)
                crops.append(image.crop((x, y, x + s, y + s)))
    return crops


def cosines(a, b):
    """Per image: cosine of the flattened (S, D) states."""
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", action="append", choices=["small", "base"])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "int8")
    parser.add_argument("--binary", default=ROOT / ".build" / "release" / "vitmsn")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = photos(ROOT / "out" / "cache")
    print(f"{len(images)} photo crops; torch {torch.__version__} ({torch.backends.quantized.engine}), onnxruntime {onnxruntime.__version__}")
    print("| model | Swift f32 | Swift bf16 | Swift f16 | Swift int8 | PyTorch int8 | ONNX Runtime int8 |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.preset or ["small", "base"]:
        hidden, layers, heads, intermediate, patch = PRESETS[preset]
        torch.manual_seed(0)
        config = ViTMSNConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=intermediate, patch_size=patch, attn_implementation="eager")
        model = ViTMSNModel(config).eval()
        directory = args.out / preset
        model.save_pretrained(directory)
        processor = ViTImageProcessor(size={"height": 224, "width": 224})
        processor.save_pretrained(directory)
        pixels = processor(images, return_tensors="pt")["pixel_values"]
        save_file({"pixel_values": pixels.contiguous()}, directory / "photos.inputs.safetensors")
        with torch.inference_mode():
            reference = model(pixel_values=pixels).last_hidden_state
            scores = {}
            for dtype in ["f32", "bf16", "f16", "int8"]:
                output = directory / f"photos.{dtype}.safetensors"
                subprocess.run([str(args.binary), "forward", "--model", directory, "--inputs", directory / "photos.inputs.safetensors",
                                "--output", output, "--dtype", dtype], check=True, capture_output=True)
                scores[dtype] = cosines(load_file(output)["last_hidden_state"], reference)
            scores["torch"] = cosines(torch_int8_model(model)(pixel_values=pixels).last_hidden_state, reference)
            session = onnx_int8_session(model, args.out / f"{preset}.onnx")
            scores["onnx"] = cosines(torch.from_numpy(session.run(None, {"pixel_values": pixels.numpy()})[0]), reference)
        cells = [f"{s.mean().item():.5f} (worst {s.min().item():.5f})" for s in scores.values()]
        print(f"| {preset} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
