"""
The math of HQQ, apart from NNCF and OpenVINO: per group of weights, the scale and zero point that minimise the
lp reconstruction error, with the half-quadratic proximal solver of Badri & Shaji (2023).

With u = W / s (weights in quantisation steps) and Q(s, z) = clip(round(u + z), q_min, q_max), the solver
minimises the lp error  phi(s, z) = sum |W - s (Q - z)|^p  (0 < p <= 1) by splitting off the error
E ~ u - (Q - z) and alternating, with beta annealed by kappa each iteration:

    E  <- shrink_p(u - (Q - z), beta),  shrink_p(x) = sign(x) max(|x| - |x|^(p-1) / beta, 0)
    z  <- clip(round(mean(Q - (u - E))))                     asymmetric modes: z stays on the integer grid
    s  <- s <(u - E), Q - z> / |Q - z|^2                      and the scale absorbs the rest (least squares)
    s  <- s <u - E, Q> / |Q|^2                                symmetric modes (no zero point)

It starts from RTN's (s, z) (or given ones, scale estimation's), in asymmetric modes optionally from the best of the
expanded scales (1 + 0.02 k) s_RTN by L2 error (`scale_search_steps`). With a float zero point storage, z is then
refitted as a float, z <- mean(Q - u) (least squares for the codes Q), where that lowers phi. Per group, the result
is the candidate with the lowest phi: never worse than the start; with `patience` = k a group stops after k
iterations without a lower phi. Scales stay at or above the no-clipping scale unless `clip_extremes`.

With the second moments a_k = E[x_k^2] of the activations the weights multiply (`moments`), each group's result is
then the one of least expected output error among HQQ's and a grid of clipped RTN scales with RTN's zero point,

    e(s, z) = sum_k a_k (W_k - s (Q_k - z))^2,   candidates: HQQ's (s, z) and (f s_RTN, z_RTN), f = 1, 0.95, ..., 0.55,

each also after two weighted least-squares refits of its scale for its codes, s <- <a L, W> / <a L, L> with
L = Q - z (the diagonal of the Gram matrix E[x x^T]; cross-channel terms are left out).

- `fused.solve_asymmetric_fused`, `fused.solve_symmetric_fused`: these equations compiled with numba and fused per
  group (`_kernel`), which `HQQ` runs; they also return the codes Q.
"""

from nncf_hqq.solver.fused import solve_asymmetric_fused
from nncf_hqq.solver.fused import solve_symmetric_fused

__all__ = ["solve_asymmetric_fused", "solve_symmetric_fused"]
