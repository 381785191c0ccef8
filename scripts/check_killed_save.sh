#!/usr/bin/env bash
# Kills `vitmsn finetune` with SIGKILL at random moments of a run that saves a checkpoint after every step,
# and checks after each kill that `last` names a complete checkpoint that loads and classifies, and that
# `--resume` carries on from it. Usage: scripts/check_killed_save.sh [path/to/vitmsn] [kills]
set -euo pipefail
bin=${1:-.build/debug/vitmsn}
kills=${2:-12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for f in Tests/Fixtures/images/*.jpg Tests/Fixtures/images/*.png; do
    class=${f##*.}; mkdir -p "$work/train/$class"; cp "$f" "$work/train/$class/"
done
run() { # replaces the calling (sub)shell, so that $! is vitmsn itself
    exec "$bin" finetune --model Tests/Fixtures/training/classifier --train-dir "$work/train" --output-dir "$work/run" \
        --epochs "$1" --batch-size 4 --save-steps 1 --ignore-mismatched-sizes --threads 1 $2 >>"$work/output.log" 2>&1
}
checked=0
mid_save=0 # kills that left a half-written checkpoint behind
for i in $(seq "$kills"); do
    resume="--overwrite-output-dir"; [ -L "$work/run/last" ] && resume="--resume"  # a run killed before its first save left files
    (run 1000 "$resume") &
    pid=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -L "$work/run/last" ] || continue
    compgen -G "$work/run/.*.partial" >/dev/null && mid_save=$((mid_save + 1))
    "$bin" classify --model "$work/run/last" Tests/Fixtures/images/rgb.png >/dev/null \
        || { echo "after kill $i: $work/run/last does not load" >&2; exit 1; }
    checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { echo "no checkpoint was ever written" >&2; exit 1; }
step=$(sed -n 's/.*"global_step" : \([0-9]*\).*/\1/p' "$work/run/last/trainer_state.json")
(run 1000 --resume) & pid=$!; sleep 1; kill -9 "$pid" 2>/dev/null || { tail -5 "$work/output.log" >&2; exit 1; }; wait "$pid" 2>/dev/null || true
after=$(sed -n 's/.*"global_step" : \([0-9]*\).*/\1/p' "$work/run/last/trainer_state.json")
[ "$after" -gt "$step" ] || { echo "--resume did not continue past step $step" >&2; exit 1; }
echo "killed-save check: $kills kills ($mid_save in the middle of a save), 'last' loaded after each of $checked, resume went on from step $step to $after"
