#!/usr/bin/env bash
# kasmina-bench end to end on the CPU with tiny repeat counts and sizes (no timing is asserted): it
# runs a layer workload, three Kasmina workloads and a short leak check, prints the table (with the
# LibTorch peer's columns when that peer is built) and the memory section, and writes a JSON report in
# the kasmina-bench/1 schema with every result's fields; bad flags exit 2 with a message.
set -euo pipefail
tool=$1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
"$tool" --device cpu --workloads layernorm,kasmina_dormant_batchnorm1d,kasmina_active_linear,cache_hit,cache_miss,train_memory \
  --repeats 3 --warmup 1 --size layernorm=64x32 --size linear=16x64 --memory-steps 20 --peer-python none \
  --json out/report.json --svg out/chart.svg > table.txt 2> progress.txt
cat table.txt
grep -q "^layernorm  *fwd+bwd" table.txt
grep -q "kasmina_dormant_batchnorm1d *dormant fwd" table.txt
grep -q "kasmina_active_linear *kasmina fwd" table.txt
grep -q '"schema": "kasmina-bench/1"' out/report.json
for field in '"workload"' '"pass"' '"median_us"' '"p10_us"' '"p90_us"' '"floor_us"' '"copy_GBps"' '"gemm_GFLOPs"'; do
  grep -q "$field" out/report.json || { echo "report lacks $field"; exit 1; }
done
[ "$(grep -c '"implementation": "kasmina"' out/report.json)" -eq 9 ] || { echo "expected 9 results"; exit 1; }
# A miss next to its bound (the file read; on a GPU also one copy to the device), the ratio bound / miss.
grep -q "^cache_miss  *read+copy " table.txt && grep -q "^cache_miss  *get .* 0\.[0-9]" table.txt \
  || { echo "no cache_miss bound and ratio"; exit 1; }
# The training step's peak memory (layernorm's fwd+bwd row), and the leak check's figures.
grep -q "^layernorm  *fwd+bwd  *[0-9.]*  *- *-$" table.txt || { echo "no peak memory row for layernorm fwd+bwd"; exit 1; }
grep -q "leak check (train_memory): 20 demo train steps at batch 16 on cpu: no growth" table.txt \
  || { echo "no leak check line"; exit 1; }
python3 - out/report.json <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
rows = {(r["workload"], r["pass"]): r for r in report["results"]}
assert rows[("layernorm", "fwd+bwd")]["peak_bytes"] > 64 * 32 * 4, "the step's peak holds at least its output"
assert rows[("layernorm", "fwd")]["peak_bytes"] is None
assert rows[("cache_miss", "get")]["bound_median_us"] == rows[("cache_miss", "read+copy")]["median_us"]
leak = report["leak_check"]
assert leak["steps"] == 20 and leak["holds"] is True, leak
assert leak["at_end"]["bytes_in_use"] == leak["after_warmup"]["bytes_in_use"], leak
PY
# The LibTorch peer, when this build has it, runs on the same (overridden) shapes and gets its columns.
if [ -x "$(dirname "$tool")/../bench/kasmina-peer-libtorch" ]; then
  "$tool" --device cpu --workloads batchnorm1d --size batchnorm1d=16x8 --repeats 3 --warmup 1 --peer-python none \
    --json out/libtorch.json --svg out/libtorch.svg > libtorch.txt 2> /dev/null
  grep -q "libtorch us" libtorch.txt || { echo "no LibTorch column"; exit 1; }
  grep -q '"libtorch_median_us": [0-9]' out/libtorch.json || { echo "report lacks libtorch_median_us"; exit 1; }
fi
set +e
"$tool" --suite nonsense > /dev/null 2> err.txt; status=$?
set -e
[ $status -eq 2 ] && grep -q "suite must be" err.txt || { echo "bad --suite not refused"; exit 1; }
set +e
"$tool" --workloads layernorm --size layernorm=4x0 > /dev/null 2> err.txt; status=$?
set -e
[ $status -eq 2 ] && grep -q "bad extent" err.txt || { echo "bad --size not refused"; exit 1; }
set +e
"$tool" --workloads train_memory --memory-steps 0 > /dev/null 2> err.txt; status=$?
set -e
[ $status -eq 2 ] && grep -q "memory-steps must be a positive count" err.txt || { echo "bad --memory-steps not refused"; exit 1; }
echo "kasmina-bench: all checks passed"
