#!/usr/bin/env bash
# The README's embedding example: the README holds tools/examples/embedding.cpp's main() verbatim,
# and the compiled example runs, ending with the seed it loaded ACTIVE at its ramped alpha.
set -euo pipefail
root=$1 binary=$2
example=$root/tools/examples/embedding.cpp
body=$(sed -n '/^int main() {/,/^}/p' "$example")
grep -qF -- "$(echo "$body" | sed -n 2p)" "$root/README.md" || { echo "README lacks the example's code"; exit 1; }
diff <(echo "$body") <(sed -n '/^int main() {/,/^}/p' "$root/README.md") || { echo "README example differs from $example"; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
"$binary" | tee out.txt
grep -q "seed 0: ACTIVE alpha 0.30" out.txt
