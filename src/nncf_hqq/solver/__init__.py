"""
The math of HQQ, apart from NNCF and OpenVINO: per group of weights, the scale and zero point that minimise the
lp reconstruction error.

- `reference.solve`: the proximal solver as readable tensor equations (the tests' reference);
- `fused.solve_asymmetric_fused`, `fused.solve_symmetric_fused`: the same equations compiled with numba and fused
  per group (`_kernel`), which `HQQ` runs.
"""

from nncf_hqq.solver.fused import solve_asymmetric_fused
from nncf_hqq.solver.fused import solve_symmetric_fused
from nncf_hqq.solver.reference import solve

__all__ = ["solve", "solve_asymmetric_fused", "solve_symmetric_fused"]
