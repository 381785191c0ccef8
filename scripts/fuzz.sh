#!/usr/bin/env bash
# Fuzzes every parser an untrusted file reaches, with libFuzzer + AddressSanitizer, for a fixed budget per
# harness (default 60 s): the C image decoders (JPEG, PNG, WebP, GIF, BMP, TIFF and EXIF, with UBSan too) and the Swift parsers
# (safetensors, torch zip + pickle, MSN checkpoints, IDX, config.json, preprocessor_config.json, pretraining
# configs in JSON and YAML, and the server's requests: inference JSON, binary tensors, multipart; fuzz/parsers).
# Seeds are the test fixtures. Exits non-zero on any finding.
# Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
status=0

# The image decoders (C).
mkdir -p out/fuzz/images
cp Tests/Fixtures/images/*.{jpg,png,webp,gif,bmp,tiff} out/fuzz/images/
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I Sources/CImageCodecs/include \
    Sources/CImageCodecs/*.c fuzz/image_decoders.c -ljpeg -lpng16 -lwebp -lwebpdemux -lgif -ltiff -o out/fuzz/image_decoders 2>&1 \
    | { grep -v "Cannot export local symbol" || true; }
out/fuzz/image_decoders -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=out/fuzz/images- out/fuzz/images > out/fuzz/images.log 2>&1 || status=$?
echo "image decoders:"
grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" out/fuzz/images.log || true

# The Swift parsers: the first byte of an input picks the parser (FuzzParsers.swift's order).
mkdir -p out/fuzz/parsers
seed() { { printf "\\x$(printf %02x "$1")"; cat "$2"; } > "out/fuzz/parsers/$1-$(basename "$2")"; }
for f in Tests/Fixtures/models/*/model.safetensors; do seed 0 "$f"; done
for f in Tests/Fixtures/torch/*.bin Tests/Fixtures/models/*_bin/pytorch_model.bin; do seed 1 "$f"; done
for f in Tests/Fixtures/torch/*.pth.tar; do seed 2 "$f"; done
head -c 2000 <(gunzip -c /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz 2>/dev/null || true) > out/fuzz/idx-seed
[ -s out/fuzz/idx-seed ] && seed 3 out/fuzz/idx-seed
for f in Tests/Fixtures/models/*/config.json; do seed 4 "$f"; done
for f in Tests/Fixtures/models/*/preprocessor_config.json; do [ -f "$f" ] && seed 5 "$f"; done
for f in configs/*.json; do seed 6 "$f"; done
for f in configs/*.yaml Tests/Fixtures/msn/*.yaml; do [ -f "$f" ] && seed 7 "$f"; done
# Server requests: Open Inference Protocol JSON and binary tensors (two bytes of header length, 0xFFFF for
# none, then the body), and simple endpoints' bodies (a Content-Type line, then a raw or multipart body).
python3 - <<'PY'
import json, struct
from pathlib import Path
out, png = Path("out/fuzz/parsers"), Path("Tests/Fixtures/images/bilevel.png").read_bytes()
def seed(name, parser, body): (out / f"{parser}-{name}").write_bytes(bytes([parser]) + body)
pixels = {"name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32"}
seed("json", 8, b"\xff\xff" + json.dumps({"inputs": [{**pixels, "data": [0.5] * 768}]}).encode())
header = json.dumps({"inputs": [{**pixels, "parameters": {"binary_data_size": 3072}}],
                     "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
seed("binary", 8, struct.pack(">H", len(header)) + header + struct.pack("<768f", *[0.25] * 768))
images = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(png) + 4}}]}).encode()
seed("images", 8, struct.pack(">H", len(images)) + images + struct.pack("<I", len(png)) + png)
seed("raw", 9, b"image/png\n" + png)
form = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n' + png + b"\r\n--XyZ--\r\n"
seed("multipart", 9, b"multipart/form-data; boundary=XyZ\n" + form)
PY
swift build --package-path fuzz/parsers --sanitize=fuzzer --sanitize=address > out/fuzz/parsers-build.log 2>&1 \
    || { tail -20 out/fuzz/parsers-build.log; exit 1; }
LSAN_OPTIONS=suppressions=fuzz/lsan.supp fuzz/parsers/.build/debug/fuzz-parsers -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    -artifact_prefix=out/fuzz/parsers- out/fuzz/parsers > out/fuzz/parsers.log 2>&1 || status=$?
echo "Swift parsers:"
grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)|Fatal error|deadly signal" out/fuzz/parsers.log || true
exit "$status"
