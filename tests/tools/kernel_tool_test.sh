#!/usr/bin/env bash
# kasmina-kernel end to end: make one artifact per blueprint kind into a store, inspect and verify
# each, and check that verify refuses a corrupted file with exit status 1 and bad flags with 2.
set -euo pipefail
tool=$1
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
"$tool" make --kind linear --in 128 --out 128 --hidden 32 --out-dir "$store" --seed 3
"$tool" make --kind conv2d --in 32 --out 64 --hidden 16 --kernel 3 --stride 2 --padding 1 --out-dir "$store"
"$tool" make --kind attention --heads 4 --head-dim 16 --hidden 16 --targets 0,2 --out-dir "$store"
"$tool" make --kind norm --features 64 --channel-dim 1 --alpha 0.5 --out-dir "$store"
count=$(ls "$store"/*.safetensors | wc -l)
[ "$count" -eq 4 ] || { echo "expected 4 artifacts, found $count"; exit 1; }
for file in "$store"/*.safetensors; do
  "$tool" verify "$file" | grep -q "valid"
  "$tool" inspect "$file" | grep -q "^ops:"
done
"$tool" inspect "$(ls "$store"/*.safetensors | head -1)"
# Same blueprint and seed -> same bytes -> same id.
first=$("$tool" make --kind linear --in 8 --out 8 --hidden 2 --out-dir "$store" --seed 9 | cut -d' ' -f1)
second=$("$tool" make --kind linear --in 8 --out 8 --hidden 2 --out-dir "$store" --seed 9 | cut -d' ' -f1)
[ "$first" = "$second" ] || { echo "ids differ: $first $second"; exit 1; }
victim=$(ls "$store"/*.safetensors | head -1)
head -c 100 "$victim" > "$store/truncated.safetensors"
set +e
"$tool" verify "$store/truncated.safetensors" 2>"$store/err"; status=$?
set -e
[ $status -eq 1 ] || { echo "verify of a truncated file exited $status, expected 1"; exit 1; }
grep -q INVALID "$store/err"
set +e
"$tool" make --kind linear --in 4 --out-dir "$store" 2>"$store/err"; status=$?
set -e
[ $status -eq 2 ] && grep -q "missing --" "$store/err" || { echo "missing flag not reported"; cat "$store/err"; exit 1; }
echo "kasmina-kernel: all checks passed"
