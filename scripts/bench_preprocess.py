"""Decoding + preprocessing of one photo to 224×224 pixel_values, Swift (`vitmsn bench --preprocess`) against
Pillow + Transformers' ViTImageProcessor (PIL path) on the same file, one core each, interleaved by rounds.

    .venv/bin/python scripts/bench_preprocess.py [--seconds 4] [--rounds 3]
"""
import argparse
import json
import statistics
import subprocess
from pathlib import Path

from PIL import Image, ImageOps
from transformers import ViTImageProcessor

from benchlib import median_seconds

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench-preprocess"
LEGACY_CONFIG = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2, "size": 224}


def python_seconds(path, processor, seconds):
    def once():
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # transformers.image_utils.load_image
        processor(image, return_tensors="np")
    return median_seconds(once, seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "preprocessor_config.json").write_text(json.dumps(LEGACY_CONFIG, indent=2))
    photo = OUT / "photo_640x480.jpg"  # a real photo at the size the issue names, baseline JPEG
    Image.open(ROOT / "Tests" / "Fixtures" / "images" / "flower_original.jpg").resize((640, 480)).save(photo, quality=90)
    processor = ViTImageProcessor(**LEGACY_CONFIG)
    swift, python = [], []
    for _ in range(args.rounds):
        out = subprocess.run([str(ROOT / ".build" / "release" / "vitmsn"), "bench", "--preprocess", str(photo), "--model", str(OUT),
                              "--seconds", str(args.seconds), "--json"], check=True, capture_output=True, text=True).stdout
        swift.append(json.loads(out)["median_ms"] / 1000)
        python.append(python_seconds(photo, processor, args.seconds))
    s, p = statistics.median(swift), statistics.median(python)
    print(f"640×480 JPEG → 224×224 pixel_values: Swift {s * 1000:.2f} ms, Pillow + ViTImageProcessor {p * 1000:.2f} ms, "
          f"Swift is {p / s:.2f}× faster")


if __name__ == "__main__":
    main()
