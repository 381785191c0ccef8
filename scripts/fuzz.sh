#!/usr/bin/env bash
# Fuzzes the image decoders with libFuzzer + AddressSanitizer + UBSan for a fixed budget (default 60 s),
# starting from the real-photo fixtures. Exits non-zero on any finding. Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
mkdir -p out/fuzz/corpus
cp Tests/Fixtures/images/*.jpg Tests/Fixtures/images/*.png out/fuzz/corpus/
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I Sources/CImageCodecs/include \
    Sources/CImageCodecs/codecs.c fuzz/image_decoders.c -ljpeg -lpng16 -o out/fuzz/image_decoders 2>&1 \
    | { grep -v "Cannot export local symbol" || true; }
status=0
out/fuzz/image_decoders -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=out/fuzz/ out/fuzz/corpus > out/fuzz/log.txt 2>&1 || status=$?
grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" out/fuzz/log.txt || true
exit "$status"
