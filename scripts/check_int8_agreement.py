"""Top-1 agreement of `vitmsn classify --dtype int8` with f32 on Fashion-MNIST's 10,000 test images (written
once as PNG files from Debian's dataset-fashion-mnist), for a classifier fine-tuned here, plus each dtype's
accuracy against the true labels.

    .venv/bin/python scripts/check_int8_agreement.py --model out/fmnist-classifier/best
"""
import argparse
import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_images(folder):
    images = np.frombuffer(gzip.open(FASHION / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        if not path.exists():
            Image.fromarray(image, mode="L").save(path)
    return paths, labels


def top1(binary, model, paths, dtype):
    run = subprocess.run([str(binary), "classify", "--model", str(model), "--json", "--top-k", "1", "--dtype", dtype,
                          "--batch-size", "64", *map(str, paths)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"vitmsn classify --dtype {dtype} failed: {run.stderr[-2000:]}")
    out = run.stdout
    entries = json.loads(out)
    failed = [entry for entry in entries if "error" in entry]
    if failed:
        raise SystemExit(f"vitmsn classify --dtype {dtype}: {len(failed)} images failed, e.g. {failed[0]}")
    by_path = {entry["image"]: entry["predictions"][0]["label"] for entry in entries}
    return [by_path[str(p)] for p in paths]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--binary", default=ROOT / ".build" / "release" / "vitmsn")
    parser.add_argument("--images", type=Path, default=ROOT / "out" / "fashion-mnist-test")
    args = parser.parse_args()
    paths, labels = test_images(args.images)
    config = json.loads((args.model / "config.json").read_text())
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    truth = [names[label] for label in labels]
    predictions = {dtype: top1(args.binary, args.model, paths, dtype) for dtype in ["f32", "bf16", "int8"]}
    for dtype, labels_of in predictions.items():
        agree = sum(a == b for a, b in zip(labels_of, predictions["f32"])) / len(paths)
        accuracy = sum(a == b for a, b in zip(labels_of, truth)) / len(paths)
        print(f"| {dtype} | {100 * accuracy:.2f} % | {100 * agree:.2f} % |")


if __name__ == "__main__":
    main()
