#!/usr/bin/env bash
# Data-parallel training under `mpirun --oversubscribe -np 2` on this machine, against one process:
#   1. equivalence: MSN (Sinkhorn, me-max, the BatchNorm head on the global batch) and fine-tuning, 5 steps:
#      every loss term and every parameter, optimizer moment and BatchNorm statistic byte-identical;
#   2. resume with a different N: 2 ranks stopped mid-epoch then resumed by 1, and the reverse, end on the
#      uninterrupted run's bytes;
#   3. failure: a rank killed mid-run ends the job non-zero within a bound, `last` loads, a relaunch goes on;
#      a rank stopped (hung) ends it within the collective timeout, with a message naming that rank.
# Usage: scripts/check_mpi.sh [path/to/vitmsn]
set -euo pipefail
bin=$(realpath "${1:-.build/debug/vitmsn}")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mpirun=(mpirun --oversubscribe --bind-to none -np 2)
work=$(mktemp -d)
trap 'pkill -9 -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
for f in Tests/Fixtures/images/*.jpg Tests/Fixtures/images/*.png; do
    class=${f##*.}; mkdir -p "$work/train/$class"; cp "$f" "$work/train/$class/"
done
fail() { echo "check_mpi: $*" >&2; exit 1; }

# A 2-layer ViT on 16-pixel gray views, batches of 8 in 8 shards, 2 focal views; 23 images, 2 steps an epoch.
config() { # config OUTPUT_DIR EPOCHS
    cat >"$work/$(basename "$1").json" <<EOF
{"meta": {"model": "fashion-mnist", "architecture": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
  "intermediate_size": 32, "patch_size": 4}, "hidden_dim": 16, "output_dim": 8, "seed": 3, "output_dir": "$1"},
 "criterion": {"batch_size": 8, "num_proto": 8, "use_sinkhorn": true, "me_max": true, "memax_weight": 1.0},
 "data": {"dataset": "$work", "rand_size": 16, "focal_size": 8, "focal_views": 2},
 "optimization": {"epochs": $2, "warmup": 1, "probe_every": 0}}
EOF
    echo "$work/$(basename "$1").json"
}
pretrain() { # pretrain [--mpi] ARGS...: one process, or 2 ranks
    local launcher=()
    if [ "$1" = --mpi ]; then launcher=("${mpirun[@]}"); shift; fi
    "${launcher[@]}" "$bin" pretrain --threads 1 --checksum-every 1 "$@" >>"$work/output.log" 2>&1 || fail "pretrain $*: $(tail -3 "$work/output.log")"
}
same_run() { # same_run DIR_A DIR_B: the weights, the optimizer and the loss terms of `last`, byte for byte
    for file in anchor.safetensors model.safetensors msn_head.safetensors optimizer.safetensors; do
        [ -f "$1/last/$file" ] || continue
        cmp -s "$1/last/$file" "$2/last/$file" || fail "$1 and $2 differ in $file"
    done
    cmp -s <(cut -d, -f1-11 "$1/log.csv") <(cut -d, -f1-11 "$2/log.csv") || fail "$1 and $2 logged different loss terms"
}

# 1. Equivalence.
pretrain --config "$(config "$work/msn-1" 3)" --stop-after-step 5
pretrain --mpi --config "$(config "$work/msn-2" 3)" --stop-after-step 5
same_run "$work/msn-1" "$work/msn-2"
finetune() { # finetune LAUNCHER... -- OUTPUT_DIR ARGS...
    "$@" --model Tests/Fixtures/training/classifier --train-dir "$work/train" --epochs 2 --batch-size 8 --learning-rate 0.01 \
        --validation-split 0.25 --gradient-accumulation-steps 2 --ignore-mismatched-sizes --threads 1 >>"$work/output.log" 2>&1
}
finetune "$bin" finetune --output-dir "$work/ft-1"
finetune "${mpirun[@]}" "$bin" finetune --output-dir "$work/ft-2"
for file in model.safetensors optimizer.safetensors; do
    cmp -s "$work/ft-1/last/$file" "$work/ft-2/last/$file" || fail "fine-tuning: 1 and 2 ranks differ in $file"
done
cmp -s <(cut -d, -f1-6 "$work/ft-1/log.csv") <(cut -d, -f1-6 "$work/ft-2/log.csv") || fail "fine-tuning: the logs differ"
echo "equivalence: 2 ranks = 1 process byte for byte (MSN: 5 steps, every loss term and tensor; fine-tuning: 2 steps of 2 micro-batches)"

# Feature extraction shared out among the ranks: embed and lowshot give the one-process output.
embed() { # embed OUTPUT LAUNCHER...: three fixture images do not decode, so the exit status is 1
    local output=$1; shift
    "$@" embed --model "$work/ft-1/last" --dir "$work/train" --batch-size 3 --threads 1 --output "$output" >>"$work/output.log" 2>&1 || true
}
embed "$work/embed-1.safetensors" "$bin"
embed "$work/embed-2.safetensors" "${mpirun[@]}" "$bin"
[ -s "$work/embed-1.safetensors" ] && cmp -s "$work/embed-1.safetensors" "$work/embed-2.safetensors" || fail "embed: 2 ranks wrote other embeddings than 1 process"
mkdir -p "$work/pair"; ln -s "$work/train" "$work/pair/train"; ln -s "$work/train" "$work/pair/val"
lowshot() { "$@" lowshot --model "$work/ft-1/last" --dataset "$work/pair" --shots 1,2 --splits 2 --threads 1 2>>"$work/output.log"; }
table_1=$(lowshot "$bin"); table_2=$(lowshot "${mpirun[@]}" "$bin")
[ -n "$table_1" ] && [ "$table_1" = "$table_2" ] || fail "lowshot: 2 ranks printed another table than 1 process: $table_2"
echo "feature extraction: embed's file and lowshot's table ($(echo "$table_1" | wc -l) lines) the same from 2 ranks as from 1 process"

# 2. Resume with a different N: 2 ranks stop at step 3 (mid-epoch 2) and 1 resumes, and the reverse.
pretrain --config "$(config "$work/straight" 3)"
pretrain --mpi --config "$(config "$work/two-then-one" 3)" --stop-after-step 3
pretrain --config "$work/two-then-one.json" --resume
same_run "$work/straight" "$work/two-then-one"
pretrain --config "$(config "$work/one-then-two" 3)" --stop-after-step 3
pretrain --mpi --config "$work/one-then-two.json" --resume
same_run "$work/straight" "$work/one-then-two"
echo "resume: 2 ranks then 1, and 1 then 2, end byte-identical to the uninterrupted run"

# 3. Failure. A rank killed with SIGKILL mid-run: the job must end within `bound` seconds.
bound=20
rank_pid() { # the pid of rank $1 of the job whose output directory is $2
    for pid in $(pgrep -f -- "--config $2"); do
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$pid"; return; }
    done
}
config "$work/killed" 400 >/dev/null
("${mpirun[@]}" "$bin" pretrain --threads 1 --checksum-every 1 --config "$work/killed.json" >"$work/killed.log" 2>&1 && rc=0 || rc=$?; echo $rc >"$work/killed.rc") &
for _ in $(seq 200); do [ -L "$work/killed/last" ] && [ -n "$(rank_pid 1 "$work/killed.json")" ] && break; sleep 0.1; done
[ -L "$work/killed/last" ] || fail "the 2-rank run wrote no checkpoint: $(tail -3 "$work/killed.log")"
sleep 0.$((RANDOM % 5 + 2))
victim=$(rank_pid 1 "$work/killed.json")
[ -n "$victim" ] || fail "rank 1 is not running: $(tail -3 "$work/killed.log")"
kill -9 "$victim"
start=$(date +%s.%N)
for _ in $(seq $((bound * 10))); do [ -f "$work/killed.rc" ] && break; sleep 0.1; done
[ -f "$work/killed.rc" ] || fail "the job still runs ${bound} s after rank 1 was killed"
elapsed=$(awk "BEGIN { print $(date +%s.%N) - $start }")
[ "$(cat "$work/killed.rc")" -ne 0 ] || fail "the job exited 0 after rank 1 was killed"
"$bin" info "$work/killed/last" >/dev/null || fail "$work/killed/last does not load after the kill"
step=$(sed -n 's/.*"global_step" : \([0-9]*\).*/\1/p' "$work/killed/last/trainer_state.json")
"${mpirun[@]}" "$bin" pretrain --threads 1 --config "$work/killed.json" --resume --stop-after-step $((step + 3)) >>"$work/output.log" 2>&1 \
    || fail "the relaunch did not resume: $(tail -3 "$work/output.log")"
after=$(sed -n 's/.*"global_step" : \([0-9]*\).*/\1/p' "$work/killed/last/trainer_state.json")
[ "$after" -eq $((step + 3)) ] || fail "the relaunch stopped at step $after, not $((step + 3))"
printf 'failure: rank 1 killed, the job ended (exit %s) %.1f s later; last (step %s) loads; the relaunch went on to step %s\n' \
    "$(cat "$work/killed.rc")" "$elapsed" "$step" "$after"

# A hung rank (SIGSTOP): the other waits --collective-timeout seconds, then ends the job naming it.
timeout=3
config "$work/hung" 400 >/dev/null
("${mpirun[@]}" "$bin" pretrain --threads 1 --checksum-every 1 --collective-timeout $timeout --config "$work/hung.json" >"$work/hung.log" 2>&1 && rc=0 || rc=$?; echo $rc >"$work/hung.rc") &
for _ in $(seq 200); do [ -L "$work/hung/last" ] && [ -n "$(rank_pid 1 "$work/hung.json")" ] && break; sleep 0.1; done
victim=$(rank_pid 1 "$work/hung.json")
[ -n "$victim" ] || fail "the hung-rank run did not start: $(tail -3 "$work/hung.log")"
kill -STOP "$victim"
start=$(date +%s.%N)
for _ in $(seq $(((timeout + bound) * 10))); do [ -f "$work/hung.rc" ] && break; sleep 0.1; done
kill -CONT "$victim" 2>/dev/null || true
[ -f "$work/hung.rc" ] || fail "the job still runs $((timeout + bound)) s after rank 1 hung"
elapsed=$(awk "BEGIN { print $(date +%s.%N) - $start }")
[ "$(cat "$work/hung.rc")" -ne 0 ] || fail "the job exited 0 with a hung rank"
grep -q "rank 0 waited .* for rank 1 " "$work/hung.log" || fail "no message names the hung rank: $(grep vitmsn "$work/hung.log" | head -3)"
printf 'failure: rank 1 stopped, the job ended %.1f s later (collective timeout %d s): %s\n' "$elapsed" "$timeout" \
    "$(grep -o 'rank 0 waited [^:]*' "$work/hung.log" | head -1)"
