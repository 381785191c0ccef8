#!/usr/bin/env bash
# Fuzzes every parser an untrusted file reaches, with libFuzzer + AddressSanitizer, for a fixed budget per
# harness (default 60 s): the C image decoders (JPEG, PNG, WebP, GIF, BMP, TIFF and EXIF, with UBSan too) and the Swift parsers
# (safetensors, torch zip + pickle, MSN checkpoints, IDX, config.json, preprocessor_config.json, pretraining
# configs in JSON and YAML; fuzz/parsers). Seeds are the test fixtures. Exits non-zero on any finding.
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
swift build --package-path fuzz/parsers --sanitize=fuzzer --sanitize=address > out/fuzz/parsers-build.log 2>&1 \
    || { tail -20 out/fuzz/parsers-build.log; exit 1; }
fuzz/parsers/.build/debug/fuzz-parsers -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    -artifact_prefix=out/fuzz/parsers- out/fuzz/parsers > out/fuzz/parsers.log 2>&1 || status=$?
echo "Swift parsers:"
grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)|Fatal error|deadly signal" out/fuzz/parsers.log || true
exit "$status"
