"""A `vitmsn finetune` output directory in Transformers: `ViTMSNForImageClassification.from_pretrained` loads
the best checkpoint, `ViTImageProcessor` loads its preprocessor, the labels are the training classes, and the
logits on the same pixel_values match Swift's (`vitmsn forward`). Also re-measures the validation accuracy
on Fashion-MNIST's test set with PyTorch when the run used it.

    .venv/bin/python scripts/check_finetuned.py out/ft-fm
"""
import argparse
import gzip
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import ViTImageProcessor, ViTMSNForImageClassification

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion_test_pixels(processor, count):
    """The first `count` test images and labels, resized and normalised as the Swift evaluation does."""
    images = np.frombuffer(gzip.open(FASHION / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    x = images[:count].astype(np.float32) * np.float32(processor.rescale_factor)
    x = (x - np.float32(processor.image_mean[0])) / np.float32(processor.image_std[0])
    return torch.from_numpy(x[:, None]), torch.from_numpy(labels[:count].astype(np.int64))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    best = (args.run / "best").resolve()
    model = ViTMSNForImageClassification.from_pretrained(best, attn_implementation="eager").eval()
    processor = ViTImageProcessor.from_pretrained(best)
    print(f"loaded {best.name}: {model.config.num_labels} labels {list(model.config.id2label.values())[:4]}…, "
          f"problem_type {model.config.problem_type}")
    config = model.config
    if config.num_channels == 1 and (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        pixels, labels = fashion_test_pixels(processor, args.count)
    else:
        pixels, labels = torch.randn(16, config.num_channels, config.image_size, config.image_size), None
    with tempfile.TemporaryDirectory() as tmp:
        save_file({"pixel_values": pixels.contiguous()}, f"{tmp}/in.safetensors")
        subprocess.run([str(ROOT / ".build/release/vitmsn"), "forward", "--model", str(best), "--inputs",
                        f"{tmp}/in.safetensors", "--output", f"{tmp}/out.safetensors"], check=True)
        swift = load_file(f"{tmp}/out.safetensors")["logits"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    print(f"max |logits(Swift) - logits(Transformers)| over {len(pixels)} images: {(swift - logits).abs().max():.2e}")
    if labels is not None:
        print(f"Transformers accuracy on the first {len(labels)} Fashion-MNIST test images: "
              f"{(logits.argmax(1) == labels).float().mean() * 100:.2f} %")


if __name__ == "__main__":
    main()
