#!/usr/bin/env bash
# The GPU checks of the CUDA issue in one run, for a machine with nvcc, the
# CUDA libraries and PyTorch but no package index and no ../shared:
#   tests/gpu/device_check.sh OUT_DIR
# Builds the CUDA engine unless a prebuilt one is carried (pydarknet/
# libpydarknet.so with CUDA inside), runs forward parity (yolov2-tiny,
# yolov2, yolov3-tiny), backward parity for every layer type and a training
# step, the 2-replicas-on-one-GPU equivalence, and yolov2 timings beside
# PyTorch (with a kernel-time table of one training step on each side);
# prints a short table last and writes details to OUT_DIR.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/pydarknet-gpu}}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if [ -f .gpu/libpydarknet.so ]; then  # a CUDA engine built elsewhere (nvcc, sm_80/sm_90), carried
    cp .gpu/libpydarknet.so .gpu/_darknet_cffi*.so pydarknet/
fi
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# cuBLAS, the CUDA runtime and NCCL from the environment's nvidia wheels, wherever they sit
LIBDIRS=$(find "$SITE/nvidia" /usr/local/cuda/lib64 \( -name 'libcublas.so*' -o -name 'libnccl.so*' \
          -o -name 'libcudart.so*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBDIRS}${LD_LIBRARY_PATH:-}"
if [ -d .whl ]; then  # carried wheels (cffi) for a machine without a package index
    $PY -m pip install -q --no-index --no-deps --target /tmp/pydarknet-site .whl/*.whl >/dev/null 2>&1
    export PYTHONPATH="/tmp/pydarknet-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:$PWD/tests/gpu:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
if ! $PY -c "from pydarknet._ffi import lib; assert lib.dn_built_with_cuda()" 2>/dev/null; then
    echo "building the CUDA engine ..." | tee "$OUT/build.log"
    make -C darknet_src -j"$(nproc)" CUDA=1 CUDA_ARCHS=90 BUILD=/tmp/pydarknet-build \
        LIB="$PWD/pydarknet/libpydarknet.so" CUDA_EXTRA_DIRS="$SITE/nvidia/cu13 $SITE/nvidia/nccl" \
        >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
# one pass of the checks against the engine now in pydarknet/: PASS LABEL
run_checks() {
# (kernel tables of one training step on each side: $OUT/profile-LABEL/)
PYDARKNET_CHECK_PROFILE="$OUT/profile-$1" $PY - "$OUT" "$1" <<'PYEOF' 2>&1 | tee "$OUT/checks-$1.log"
import json, sys, time
from pathlib import Path
from pydarknet._ffi import ffi, lib
import checks
out, label = Path(sys.argv[1]), sys.argv[2]
buf = ffi.new("char[256]")
lib.dn_cuda_device_name(0, buf, 256)
print(f"[{label}] device:", ffi.string(buf).decode(), "| CUDA build:", lib.dn_built_with_cuda(),
      "| cuDNN:", lib.dn_built_with_cudnn(), "| GPUs:", lib.dn_cuda_device_count(), flush=True)
start = time.time()
results = checks.run_all(with_timings=True)
(out / f"checks-{label}.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
print(f"[{label}] {time.time() - start:.0f} s", flush=True)
PYEOF
}
run_checks im2col
# the same checks with convolutions through cuDNN, where the environment has it
# (PyTorch's nvidia-cudnn wheel); PYDARKNET_CHECK_CUDNN=0 skips this pass
if [ "${PYDARKNET_CHECK_CUDNN:-1}" != 0 ] && [ -f "$SITE/nvidia/cudnn/include/cudnn.h" ]; then
    echo "building the CUDA engine with cuDNN ..." | tee "$OUT/build-cudnn.log"
    if make -C darknet_src -j"$(nproc)" CUDA=1 CUDNN=1 CUDA_ARCHS=90 BUILD=/tmp/pydarknet-build-cudnn \
        LIB=/tmp/pydarknet-cudnn/libpydarknet.so \
        CUDA_EXTRA_DIRS="$SITE/nvidia/cu13 $SITE/nvidia/nccl $SITE/nvidia/cudnn" >> "$OUT/build-cudnn.log" 2>&1; then
        cp pydarknet/libpydarknet.so /tmp/pydarknet-im2col.so
        cp /tmp/pydarknet-cudnn/libpydarknet.so pydarknet/libpydarknet.so
        run_checks cudnn
        cp /tmp/pydarknet-im2col.so pydarknet/libpydarknet.so
    else
        tail -20 "$OUT/build-cudnn.log"
    fi
fi
# the table, last
$PY - "$OUT" <<'PYEOF' | tee "$OUT/table.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"\n{'pass':7s} {'check':66s} {'error/ratio':>12s}  result")
for label in ("im2col", "cudnn"):
    f = out / f"checks-{label}.json"
    if not f.exists():
        continue
    for r in json.loads(f.read_text()):
        print(f"{label:7s} {r['name'][:66]:66s} {r['error']:12.3g}  {'PASS' if r['passed'] else 'FAIL'}  {r['detail']}")
PYEOF
