#!/usr/bin/env bash
# The first run on a GPU host, in one command (at most ~9 minutes on one H200); what to read: docs/gpu-check.md.
#
#   scripts/gpu-check.sh OUT_DIR
#
# For a host that has the frameworks (torch, JAX, Flax) and their usual neighbours installed but not our own
# dependencies: it installs the device kit (scripts/device-kit.sh, carried as .kit/ or $KIT_DIR) into OUT_DIR/site,
# for this run only, then, in order, each step bounded in time and written to OUT_DIR as it finishes:
#   1. env.txt          nvidia-smi (devices, driver, MIG), CUDA_VISIBLE_DEVICES, Python and package versions
#   2. frameworks.json  what torch and JAX see
#   3. nvml.json        the orchestrator's GPU discovery (UUIDs, MIG, unreadable GPUs) and one NVML sample per slot
#   4. bf16.json        the dtype cuDNN's LSTM runs in under autocast and in the workload's explicit bf16 path
#   5. run-fp32/        torch, jax, flax at the 2016 sizes (hidden 128..2048), --runner local --python current
#   6. run-tf32-bf16/   the same frameworks in tf32 and bf16 at hidden 512
#   7. run-compiled/    torch's compiled impl (torch.compile: Inductor and Triton) in fp32 at hidden 512, if time is left
#   8. SUMMARY.txt      one line per cell (status, ms, first step s), and each step's exit code
# A step that runs out of time is interrupted like Ctrl-C: the cells it finished are kept, and its report is made.
# Without a GPU it writes nothing and exits 1 with one line. Environment: PYTHON (default python3), KIT_DIR,
# GPU_CHECK_BUDGET_S (default 480).
set -uo pipefail

out="${1:?usage: scripts/gpu-check.sh OUT_DIR}"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
budget="${GPU_CHECK_BUDGET_S:-480}"  # + at most ~1 min of reports after an interrupted run: <= 9 min
start=$SECONDS

# --- a GPU at all? One line and exit 1 if not (before anything is written).
if ! listing="$(nvidia-smi -L 2>&1)" || ! grep -q '^GPU ' <<<"$listing"; then
  why="$(head -n1 <<<"${listing:-nvidia-smi printed nothing}")"
  command -v nvidia-smi >/dev/null || why="nvidia-smi not found"
  echo "gpu-check: no GPU on this host ($why)" >&2
  exit 1
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
summary="$out/SUMMARY.txt"
: >"$summary"
left() { echo $(( budget - (SECONDS - start) )); }
note() { echo "$*" | tee -a "$summary"; }

# step NAME CAP CMD...: CMD with at most CAP seconds, never past the budget; its exit code goes into the summary.
step() {
  local name="$1" cap="$2"; shift 2
  local limit; limit=$(left)
  (( limit > cap )) && limit=$cap
  if (( limit < 5 )); then note "$name: skipped (budget spent)"; return; fi
  # SIGINT first, as Ctrl-C: the orchestrator keeps finished cells and writes its report; KILL 30 s later.
  timeout -s INT -k 30 "$limit" "$@"
  note "$name: exit $? after $((SECONDS - start)) s (limit ${limit} s)"
}

# --- the kit: pydantic and its dependencies, into a folder of this run only (the host's Python is left alone).
if ! "$python" -c "import pydantic" 2>/dev/null; then
  tag="$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  kit="${KIT_DIR:-$root/.kit}/$tag"
  if ! ls "$kit"/*.whl >/dev/null 2>&1; then
    echo "gpu-check: pydantic is missing and there is no kit in $kit (make one: scripts/device-kit.sh .kit)" >&2
    exit 2
  fi
  # A wheel is a zip of what goes into site-packages: unpacking is enough where this Python has no pip.
  "$python" -m pip install --quiet --no-index --no-deps --target "$out/site" "$kit"/*.whl 2>/dev/null \
    || "$python" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$out/site" "$kit"/*.whl || exit 2
  export PYTHONPATH="$out/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

# --- 1. environment facts
{
  echo "# date: $(date -u +%FT%TZ)  host: $(hostname)  CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
  echo "# nvidia-smi -L"; echo "$listing"
  echo "# nvidia-smi"; timeout 30 nvidia-smi 2>&1
  echo "# nvidia-smi --query-gpu"
  timeout 30 nvidia-smi --query-gpu=index,uuid,name,driver_version,pci.bus_id,mig.mode.current,clocks.max.sm,power.limit,persistence_mode --format=csv 2>&1
  echo "# python: $("$python" -VV 2>&1)"
  echo "# packages"
  "$python" -m pip list 2>/dev/null | grep -iE '^(torch|jax|jaxlib|jax-cuda|flax|numpy|scipy|pandas|pydantic|nvidia-ml-py|nvidia-cudnn|nvidia-cublas) ' || true
} >"$out/env.txt" 2>&1
note "env: written (env.txt)"

# --- 2.-4. probes
probe() { step "$1" "$2" bash -c '"$0" "$1" "$2" >"$3" 2>"$3.stderr"' "$python" "$root/scripts/gpu_check_probes.py" "$1" "$out/$1.json"; }
probe frameworks 120
probe nvml 30
probe bf16 120

# --- 5.-7. the main job, fp32 first; then tf32 and bf16 at hidden 512; then torch compiled
run() {  # NAME CAP FRAMEWORKS [ARGS...]
  local name="$1" cap="$2" only="$3"; shift 3
  (cd "$root" && step "$name" "$cap" "$python" -m orchestrator matrix.yaml --only "$only" --runner local \
    --python current --device gpu --out "$out/$name" -q --set repeats=1 "$@" >"$out/$name.log" 2>&1)
  if [ -d "$out/$name" ] && [ ! -f "$out/$name/report.md" ]; then  # interrupted before its report
    (cd "$root" && timeout 60 "$python" -m orchestrator report "$out/$name" >>"$out/$name.log" 2>&1)
  fi
}
# The fp32 job gets all but 100 s of what is left (15 cells: framework start-up and XLA compiles dominate); the
# precision job, 6 cells at hidden 512, the rest but 120 s when over 220 s are left. One process per cell (repeats=1,
# not matrix.yaml's 3): this check proves the host and its paths within its budget; ranking needs the main job's
# repeats.
run run-fp32 $(( $(left) - 100 )) torch,jax,flax
# The compiled impl last, on what the others leave: its cold compile (64 unrolled timesteps, forward and backward)
# is the one cost nobody has measured on a GPU yet, but fp32, tf32 and bf16 come first.
cap=$(left); (( cap > 220 )) && cap=$(( cap - 120 ))
run run-tf32-bf16 "$cap" torch,jax,flax --hidden 512 --set 'precision=[tf32,bf16]'
run run-compiled "$(left)" torch --hidden 512 --set 'impls=[compiled]'

# --- 8. one line per cell
"$python" - "$out" >>"$summary" 2>&1 <<'EOF'
import json, pathlib, sys
for record in sorted(pathlib.Path(sys.argv[1]).glob("run-*/cells/*/record.json")):
    r = json.loads(record.read_text())
    w = r.get("workload") or {}
    times = w.get("times_ms") or []
    ms = f"{sorted(times)[len(times) // 2]:.2f} ms median" if times else "-"
    if w.get("first_step_s") is not None:  # the one-off cost of the first step (a JIT compile), not in the median
        ms += f", first step {w['first_step_s']:.2f} s"
    why = (r.get("reason") or "").splitlines()[:1]
    print(f"{record.parent.parent.parent.name} {r['cell_id']} on {r.get('slot')}: {r['status']} {ms} {why[0][:160] if why else ''}")
EOF
note "gpu-check: done in $((SECONDS - start)) s; read docs/gpu-check.md"
