#!/usr/bin/env bash
# Regenerate reports/example-cpu/ (the example report README.md links) with the current tool: the local runner,
# every framework that has CPU requirements (images/*/requirements-cpu*.txt), tiny sizes, on this machine's CPU.
# The cells, sizes, order and command are fixed, so only the measured times differ between two runs.
#
# usage: scripts/make-example-report.sh        (from anywhere; PYTHON=... picks the interpreter, default python3)
#
# Runtime on the 2-core development machine: see reports/example-cpu/README.md (written by this script), plus
# the first creation of each framework's cached environment (~/.cache/lstm-bench/venvs, GBs of downloads).
# The old example is kept until the new run has finished; a failed run puts it back.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=reports/example-cpu

# Every framework the local runner can build an environment for, by name (the report orders the 2016 rows first).
frameworks=$(ls images/*/requirements-cpu*.txt | cut -d/ -f2 | sort -u | paste -sd, -)
# Each framework's default impl, plus the compiled paths (torch compiled, TensorFlow xla: docs/matrix.md "Impls"),
# so the example shows what compiling costs before the first step and what it buys after.
args=(matrix.yaml --runner local --device cpu --only "$frameworks" --hidden 16,32,64 --set "impls=[fused,compiled,xla]"
      --set batch=16 --set seq_len=16 --set vocab=1000 --set iters=12 --set warmup=2
      --set timeout_s=900 --set repeats=1 --set name=example-cpu --out "$out" -q)

old=$(mktemp -d "${TMPDIR:-/tmp}/example-cpu.XXXXXX")
if [ -e "$out" ]; then mv "$out" "$old/"; fi
started=$(date +%s)
if ! "$python" -m orchestrator "${args[@]}"; then
  rm -rf "$out"
  if [ -e "$old/example-cpu" ]; then mv "$old/example-cpu" "$out"; fi
  rmdir "$old" 2>/dev/null || true
  echo "make-example-report: the run failed; the previous example is back in $out" >&2
  exit 1
fi
seconds=$(( $(date +%s) - started ))
rm -rf "$old"

cat > "$out/README.md" <<EOF
# Example report — CPU numbers, tiny sizes (not GPU numbers)

Made by \`scripts/make-example-report.sh\` with the tool at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown),
on $(date -u +%Y-%m-%d) on a $(nproc)-core machine without a GPU, with the local runner and each framework's pinned CPU
build in its cached virtual environment (the run took $seconds s, creating any environment not yet cached):

\`\`\`bash
python -m orchestrator ${args[*]}
\`\`\`

These are **CPU** timings at batch 16 and sequence 16, so they say nothing about GPU speed and are not comparable
with the 2016 GTX 980 table (the report therefore shows no speed-up against it). Each cell ran once, in one fresh
process (\`repeats=1\`, where the main job runs 3), so its order is not checked against run-to-run spread. They show what the report looks
like and that every framework computes the same model: the equivalence column compares each cell's first two losses
with the NumPy reference. Read [\`report.md\`](report.md) or open \`report.html\`.
EOF
echo "make-example-report: $out regenerated in $seconds s"
