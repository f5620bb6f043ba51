#!/usr/bin/env bash
# Issue 7 on a GPU: builds the `gpu_mixed_precision` example (release, Vulkan) on this x86-64
# machine, stages the binary in .gpu/ and the Vulkan loader packages in .gl/ (both git-ignored),
# and prints the `run` call that measures it on the device tool's GPU machine (see
# ../shared/gpu/README.md: that machine has no Vulkan loader, so .gl/ must travel with the binary).
#
#   scripts/gpu_check.sh           # build (a cold release build of burn+wgpu takes ~40 min on 2 cores)
#   scripts/gpu_check.sh --print   # only print the run call (after a build)
#
# GPU_FEATURES (default `vulkan`) picks the trainer's GPU feature; the example then runs with
# `--device vulkan`. What it prints there: f32 and f16 ms/step and final loss for the raw burn loop
# and the TrainingManager, the ratios against the targets, and a final `RESULT {json}` line.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/exptrack-target}"
features="${GPU_FEATURES:-vulkan}"
name=gpu_mixed_precision
stage=.gpu
limit=$((60 * 1024 * 1024)) # the device tool carries at most 64 MiB in all

print_run() {
  local bin="$stage/$name" staged
  [ -f "$stage/$name.gz" ] && bin="$stage/$name.gz"
  if [ -f "$bin" ]; then
    staged="Staged: $(stat -c %s "$bin") bytes in $bin, loader packages in .gl/."
  else
    staged="Nothing staged yet: run scripts/gpu_check.sh without --print first."
  fi
  cat <<EOF

$staged
On the GPU machine, call the device tool's \`run\` with
  carry:   [".gl", ".gpu"]
  command: set -o pipefail; for f in .gl/*.deb; do dpkg -x \$f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; B=$stage/$name; if [ -f \$B.gz ]; then gunzip -c \$B.gz > /tmp/$name && chmod +x /tmp/$name && B=/tmp/$name; fi; \$B --device vulkan 2>&1 | tee \$OUT/$name.txt
Exit status 2 means no Vulkan adapter was found (the loader or the ICD is missing).
Copy the table and the RESULT line into docs/performance.md.
EOF
}

if [ "${1:-}" = "--print" ]; then
  print_run
  exit 0
fi

echo "==> Vulkan loader packages (.gl/)"
if ! ls .gl/*.deb >/dev/null 2>&1; then
  prepare="$root/../shared/gpu/prepare.sh"
  if [ -x "$prepare" ]; then
    "$prepare"
  else
    echo "error: .gl/ has no loader packages and $prepare is missing" >&2
    exit 1
  fi
fi
mkdir -p "$stage"
if ! git check-ignore -q "$stage/$name"; then # the run tool carries only ignored paths
  gitdir=$(git rev-parse --git-dir)
  mkdir -p "$gitdir/info"
  echo "/$stage/" >> "$gitdir/info/exclude"
fi

echo "==> cargo build --release --example $name (features: $features)"
start=$(date +%s)
cargo build --release -p exptrack-trainer --no-default-features --features "$features" \
  --example "$name"
echo "    built in $(($(date +%s) - start)) s"

bin="$CARGO_TARGET_DIR/release/examples/$name"
rm -f "$stage/$name" "$stage/$name.gz"
cp "$bin" "$stage/$name"
strip "$stage/$name"
if [ "$(stat -c %s "$stage/$name")" -gt "$limit" ]; then
  gzip -9 "$stage/$name"
fi
print_run
