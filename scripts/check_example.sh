#!/usr/bin/env bash
# Builds Examples/ClassifyPhoto (an app depending on this package by path) and checks that its labels and
# scores equal `vitmsn classify --json`'s on the same model and photos.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${1:-.build/debug/vitmsn}
model=Tests/Fixtures/models/classifier_single
photos=(Tests/Fixtures/images/baseline_420.jpg Tests/Fixtures/images/rgb.png Tests/Fixtures/images/palette.png)
swift build --package-path Examples/ClassifyPhoto >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
Examples/ClassifyPhoto/.build/debug/ClassifyPhoto "$model" "${photos[@]}" > "$scratch/example.json"
"$cli" classify --model "$model" --json "${photos[@]}" > "$scratch/cli.json"
python3 - "$scratch/example.json" "$scratch/cli.json" <<'PY'
import json, sys
example, cli = (json.load(open(p)) for p in sys.argv[1:])
assert [e["image"] for e in example] == [c["image"] for c in cli], "different images"
for e, c in zip(example, cli):
    assert [p["label"] for p in e["predictions"]] == [p["label"] for p in c["predictions"]], (e, c)
    for p, q in zip(e["predictions"], c["predictions"]):
        assert abs(p["score"] - q["score"]) <= 1e-6 * max(1, abs(q["score"])), (p, q)
print(f"example app: {len(example)} images, the same labels and scores as vitmsn classify --json")
PY
