#!/usr/bin/env bash
# Fault injection on `vitmsn convert`, `finetune`'s checkpoints and `download`: a read-only output directory
# and a full disk (a file-size limit, with
# SIGXFSZ ignored so that write(2) fails with EFBIG as on a full disk) must end with a clear error, the earlier
# directory or checkpoint intact and no partial file left; SIGKILL at random moments must leave the
# destination missing or whole, never half written, and leave no partial file in a download's snapshot.
# Usage: scripts/check_faults.sh [path/to/vitmsn] [kills]
set -euo pipefail
bin=${1:-.build/debug/vitmsn}
kills=${2:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" init --preset small --num-labels 3 --output "$work/source" >/dev/null  # 88 MB: a kill can land mid-write
cp Tests/Fixtures/models/base/preprocessor_config.json "$work/source/"

# A full disk: 1 MB of file size allowed; the earlier conversion in place must survive untouched.
started=$(date +%s%N)
"$bin" convert "$work/source" "$work/earlier" --dtype bf16 >/dev/null
took=$((($(date +%s%N) - started) / 1000000))  # ms: the kills below land from 0.5 to 2 times this (a killed run took up to 1.4 times as long)

before=$(cd "$work/earlier" && sha256sum ./* | sort)
set +e
(trap '' XFSZ; ulimit -f 1024; exec "$bin" convert "$work/source" "$work/earlier" --dtype f16 --overwrite-output-dir) >"$work/full.log" 2>&1
status=$?
set -e
[ "$status" -ne 0 ] || { echo "convert on a full disk exited 0" >&2; exit 1; }
grep -q "model.safetensors" "$work/full.log" || { echo "the full-disk error does not name the file:" >&2; cat "$work/full.log" >&2; exit 1; }
grep -qi "space\|too large\|cannot write" "$work/full.log" || { echo "the full-disk error does not say why:" >&2; cat "$work/full.log" >&2; exit 1; }
after=$(cd "$work/earlier" && sha256sum ./* | sort)
[ "$before" = "$after" ] || { echo "the earlier conversion changed after a failed one" >&2; exit 1; }
leftovers=$(find "$work" -maxdepth 2 -name '.*' ! -name '.' | wc -l)
[ "$leftovers" -eq 0 ] || { echo "partial files left behind:" >&2; find "$work" -maxdepth 2 -name '.*' >&2; exit 1; }

# A full disk while fine-tuning saves a checkpoint: a clear error, the earlier checkpoint intact, no partial
# checkpoint left. The first run saves after every step; the resumed one may write only 16 KB per file (the model alone is 24 KB).
mkdir -p "$work/train/a" "$work/train/b"
cp Tests/Fixtures/images/*.jpg "$work/train/a/"
cp Tests/Fixtures/images/*.png "$work/train/b/"
finetune() {
    "$bin" finetune --model Tests/Fixtures/training/classifier --train-dir "$work/train" --output-dir "$work/run" \
        --batch-size 8 --save-steps 1 --ignore-mismatched-sizes --threads 1 "$@"
}
finetune --epochs 1 >/dev/null 2>&1
last=$(readlink -f "$work/run/last")
before=$(cd "$last" && sha256sum ./* | sort)
set +e
(trap '' XFSZ; ulimit -f 16; finetune --epochs 2 --resume) >"$work/full-train.log" 2>&1
status=$?
set -e
[ "$status" -ne 0 ] || { echo "finetune on a full disk exited 0" >&2; exit 1; }
grep -q "safetensors\|checkpoint" "$work/full-train.log" || { echo "the full-disk error does not name the file:" >&2; tail -5 "$work/full-train.log" >&2; exit 1; }
grep -qi "space\|too large\|cannot write" "$work/full-train.log" || { echo "the full-disk error does not say why:" >&2; tail -5 "$work/full-train.log" >&2; exit 1; }
after=$(cd "$last" && sha256sum ./* | sort)
[ "$before" = "$after" ] || { echo "the earlier checkpoint changed after a failed save" >&2; exit 1; }
[ "$(readlink -f "$work/run/last")" = "$last" ] || { echo "'last' moved to a checkpoint that failed to save" >&2; exit 1; }
partial=$(find "$work/run" -maxdepth 1 -name '.*' | wc -l)
[ "$partial" -eq 0 ] || { echo "partial checkpoints left behind:" >&2; find "$work/run" -maxdepth 1 -name '.*' >&2; exit 1; }
"$bin" classify --model "$work/run/last" Tests/Fixtures/images/rgb.png >/dev/null || { echo "the earlier checkpoint no longer loads" >&2; exit 1; }

# A read-only output directory (a read-only tmpfs, mounted in a mount namespace of this check's own, since root
# writes through permission bits): finetune and convert fail at once with the reason, and write nothing.
mkdir -p "$work/readonly"
readonly_run() {  # readonly_run LOG ARGS...: vitmsn ARGS with $work/readonly mounted read-only
    local log=$1; shift
    set +e
    unshare -m sh -c 'mount -t tmpfs -o ro,size=1m tmpfs "$0" && exec "$@"' "$work/readonly" "$bin" "$@" >"$log" 2>&1
    local status=$?
    set -e
    [ "$status" -ne 0 ] || { echo "vitmsn $1 into a read-only directory exited 0" >&2; exit 1; }
    grep -qi "read-only" "$log" || { echo "vitmsn $1 into a read-only directory does not say why:" >&2; cat "$log" >&2; exit 1; }
}
readonly_run "$work/readonly-finetune.log" finetune --model Tests/Fixtures/training/classifier --train-dir "$work/train" \
    --output-dir "$work/readonly/run" --epochs 1 --ignore-mismatched-sizes --threads 1
readonly_run "$work/readonly-convert.log" convert "$work/source" "$work/readonly/converted" --dtype bf16
[ -z "$(ls -A "$work/readonly")" ] || { echo "files appeared under the mount point" >&2; exit 1; }

# SIGKILL at random moments: afterwards the destination is missing, or it loads (info) with its processor.
whole=0
for i in $(seq "$kills"); do
    rm -rf "$work/killed"
    (exec "$bin" convert "$work/source" "$work/killed" --dtype bf16 >/dev/null 2>&1) & pid=$!  # $! is vitmsn itself
    sleep "$(awk -v ms=$((took / 2 + RANDOM % (took * 15 / 10 + 1))) 'BEGIN { printf "%.3f", ms / 1000 }')"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -e "$work/killed" ] || continue
    "$bin" info "$work/killed" >/dev/null 2>&1 || { echo "after kill $i: $work/killed exists but does not load" >&2; ls -la "$work/killed" >&2; exit 1; }
    [ -f "$work/killed/preprocessor_config.json" ] || { echo "after kill $i: $work/killed lacks preprocessor_config.json" >&2; exit 1; }
    whole=$((whole + 1))
done
# SIGKILL during `download` (LFS bodies trickling at 500 bytes a second, so kills land mid-body): no file of
# the snapshot is ever partial, and the next download completes what is left with the served bytes.
start_hub() {  # scripts/fake_hub.py with $@; sets $port and $hub; the hub stops when fd 3 closes (stop_hub)
    rm -f "$work/hub.port" "$work/hub.in"
    mkfifo "$work/hub.in"
    python3 scripts/fake_hub.py --root Tests/Fixtures/models/base --repo facebook/vit-msn-tiny --seconds 90 "$@" \
        <"$work/hub.in" >"$work/hub.port" 2>/dev/null &
    hub=$!
    exec 3>"$work/hub.in"
    for _ in $(seq 100); do [ -s "$work/hub.port" ] && break; sleep 0.1; done
    port=$(head -1 "$work/hub.port")
}
stop_hub() { exec 3>&-; wait "$hub" 2>/dev/null || true; }
served=$(cd Tests/Fixtures/models/base && sha256sum ./* | sort)
snapshot() { find "$work/hf/hub" -path '*snapshots*' \( -type l -o -type f \) 2>/dev/null || true; }
start_hub --trickle-lfs
download_kills=3
for i in $(seq "$download_kills"); do
    (HF_HOME="$work/hf" HF_ENDPOINT="http://127.0.0.1:$port" exec "$bin" download facebook/vit-msn-tiny >/dev/null 2>&1) & pid=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for file in $(snapshot); do
        grep -qF "$(sha256sum <"$file" | cut -d' ' -f1)  ./$(basename "$file")" <<<"$served" \
            || { echo "after download kill $i: $file is in the snapshot but not what was served" >&2; exit 1; }
    done
done
partial=$(find "$work/hf/hub" -name '*.incomplete' 2>/dev/null | wc -l)
stop_hub
start_hub
HF_HOME="$work/hf" HF_ENDPOINT="http://127.0.0.1:$port" "$bin" download facebook/vit-msn-tiny >"$work/download.log" 2>&1 \
    || { echo "the download after the kills failed:" >&2; cat "$work/download.log" >&2; exit 1; }
stop_hub
downloaded=$(cd "$(dirname "$(snapshot | head -1)")" && sha256sum ./* | sort)
[ "$downloaded" = "$served" ] || { echo "the completed download differs from the served files" >&2; exit 1; }

echo "fault check: a full disk failed convert and a checkpoint save with clear errors and left the earlier directory and checkpoint as they were; a read-only directory failed finetune and convert saying so; $kills kills left $whole whole destinations and $((kills - whole)) missing, none half written; $download_kills kills of download left no partial file in the snapshot ($partial partial body kept aside to resume), and the next download completed it"
