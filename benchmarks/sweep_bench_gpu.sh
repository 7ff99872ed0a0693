#!/bin/bash
# The sweep benchmark (benchmarks/sweep_bench.py) on one GPU: N = 1, 4, 16, 64 members in one
# program vs N concurrent processes sharing the GPU, and the sweep's cost per member in one
# process, MLP at batch 64 and 256 (the multi-process section needs 2 devices: left out).
#   pip install -e . "jax[cuda12]"       # a CUDA build of the pinned jax version
#   bash benchmarks/sweep_bench_gpu.sh   # writes benchmarks/results/sweep_gpu.{json,md}
# Concurrent processes must not each preallocate 75% of the GPU's memory.
set -euo pipefail
cd "$(dirname "$0")/.."
export JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_PREALLOCATE=false
python -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'
python benchmarks/sweep_bench.py --sections=inprocess,concurrent --members=1,4,16,64 \
    --batches=64,256 --steps=100 --rounds=2 --max_processes=16 --out=benchmarks/results/sweep_gpu "$@"
