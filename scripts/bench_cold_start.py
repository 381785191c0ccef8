"""Cold start: from process start to the printed label, `vitmsn classify` against a fresh Python process
running transformers.pipeline("image-classification"), on the same ViT-B/16 classifier directory
(random weights, 1000 labels, the released checkpoints' preprocessor config) and the same photo.
Interleaved rounds, warm page cache; prints medians and the ratio.

    .venv/bin/python scripts/bench_cold_start.py [--rounds 5]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "cold-start"
PHOTO = ROOT / "Tests" / "Fixtures" / "images" / "flower_original.jpg"
PYTHON = """
from transformers import pipeline
classify = pipeline("image-classification", model=%r, device="cpu")
print(classify(%r, top_k=1))
"""


def seconds(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (OUT / "config.json").exists():
        from transformers import ViTMSNConfig, ViTMSNForImageClassification
        ViTMSNForImageClassification(ViTMSNConfig(num_labels=1000)).save_pretrained(OUT)
        (OUT / "preprocessor_config.json").write_text(json.dumps({
            "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2, "size": 224}))
    swift_command = [str(ROOT / ".build" / "release" / "vitmsn"), "classify", "--model", str(OUT), str(PHOTO), "--top-k", "1"]
    python_command = [sys.executable, "-c", PYTHON % (str(OUT), str(PHOTO))]
    swift, python = [], []
    for _ in range(args.rounds):
        swift.append(seconds(swift_command))
        python.append(seconds(python_command))
    s, p = statistics.median(swift), statistics.median(python)
    print(f"cold start, ViT-B/16 classify one photo: Swift {s * 1000:.0f} ms, transformers.pipeline {p * 1000:.0f} ms "
          f"(Swift takes {s / p:.2f} of the time)")


if __name__ == "__main__":
    main()
