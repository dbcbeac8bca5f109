#!/usr/bin/env bash
# The GPU checks and GPU figures in one command, for a lent NVIDIA machine (the device tool's `run`). That machine
# has torch, torchvision, timm and pytest but fetches nothing, so segmentation_models_pytorch travels as a wheel.
# Its image held torch 2.11.0 and torchvision 0.26.0 when last read; the whole CPU suite passes under that pair
# (573 passed, 20 skipped: OMP_NUM_THREADS=1 python -m pytest -q -n 2 in a venv with torch==2.11.0
# torchvision==0.26.0 from PyPI, 2026-12-01), so src/ runs there from PYTHONPATH as it is.
# Prepare once in the checkout (needs PyPI):
#
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps -d .whl segmentation-models-pytorch==0.6.0
#
# then run `bash benchmarks/device_check.sh` there with carry [".whl"] and timeout_s 540. In order, each step with
# its own time limit so one that hangs leaves time for the rest:
#   1. tests/test_cuda.py and the CUDA metrics test (the training loop at fp32, fp16 with its scaler, bf16);
#   2. train_throughput at bf16 (rounds of at least 1 s: a GPU step takes milliseconds);
#   3. inference_throughput at fp32 and bf16, with the share of the device's nominal bf16 peak;
#   4. train_throughput at fp32, last, as the one to lose if time runs out.
# Everything lands in $OUT: the log, the benchmarks' results files and docs/benchmarks.md with the new tables between
# their markers. Copy the results files and docs/benchmarks.md back into the checkout and commit them with the
# device's name.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/device_check}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
else
    echo "no .whl/: the SMP rows will be skipped (see the top of this file)"
    export PYTHONPATH=$PWD/src
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
      torch.cuda.get_device_name(0))"

step() {  # step SECONDS COMMAND...: run it under a time limit, go on whatever it returns
    local limit=$1; shift
    echo "+ [$limit s] $*"
    timeout "$limit" "$@"
    echo "= exit $? after ${SECONDS} s in all"
}
step 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_metrics.py -k "cuda"
step 150 python3 benchmarks/train_throughput.py --device cuda --precision bf16 --repeats 5 --min-round-seconds 1
step 150 python3 benchmarks/inference_throughput.py --device cuda --repeats 3 --min-round-seconds 0.3
step 120 python3 benchmarks/train_throughput.py --device cuda --repeats 5 --min-round-seconds 1
cp benchmarks/results/*_cuda*.md docs/benchmarks.md "$out"/ 2>/dev/null
ls -l "$out"
