"""
The math of HQQ, apart from NNCF and OpenVINO: per group of weights, the scale and zero point that minimise the
lp reconstruction error.

- `reference.solve`: the proximal solver as readable tensor equations (symmetric modes, and the tests' reference);
- `fused.solve_asymmetric_fused`: the same equations for asymmetric modes, compiled with numba and fused per
  group (`_kernel`).
"""

from nncf_hqq.solver.fused import solve_asymmetric_fused
from nncf_hqq.solver.reference import solve
from nncf_hqq.solver.reference import solve_in_row_blocks

__all__ = ["solve", "solve_asymmetric_fused", "solve_in_row_blocks"]
