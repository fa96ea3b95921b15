"""
numba as nncf-hqq's compiled kernels need it, set before any of them is compiled or loaded: import this module
first wherever `numba.njit` is used.

- Threading layer: OpenMP, then numba's own pool, then TBB (TBB warns whenever a thread forks afterwards, and
  OpenVINO's telemetry forks), unless the environment chooses one.
- On CPUs with AVX-512, 512-bit vectors (LLVM prefers 256-bit ones there unless told otherwise; the HQQ kernel ran
  19% faster with them here), unless the environment sets numba's CPU name or features. The setting is numba's,
  process-wide.
"""

import os

import numba
from numba.core.codegen import get_host_cpu_features

if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
if numba.config.CPU_NAME is None and numba.config.CPU_FEATURES is None:
    _features = get_host_cpu_features()
    if "+avx512f" in _features.split(","):
        numba.config.CPU_FEATURES = f"{_features},-prefer-256-bit"

# "reassoc" lets sums vectorise; no reciprocal approximations and no fused multiply-adds, as in numpy.
FASTMATH = {"reassoc", "nsz"}
