"""
The HQQ solver, compiled with numba and fused per group (`nncf_hqq.solver._kernel`), on Tensors.
"""

import contextlib
import gc
from collections.abc import Iterator

import nncf
import numpy as np
from nncf.tensor import Tensor

from nncf_hqq._float16 import kernel_values
from nncf_hqq._signals import signals_deferred
from nncf_hqq.parameters import MOMENT_GRID
from nncf_hqq.parameters import MOMENT_REFITS
from nncf_hqq.parameters import SCALE_SEARCH_STEP
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage


def solve_asymmetric_fused(
    weight: Tensor,
    scale: Tensor | None,
    zero_point: Tensor | None,
    num_bits: int,
    params: AdvancedHQQParameters,
    importance: Tensor | None = None,
    codes: np.ndarray | None = None,
    moments: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """
    The solver of `nncf_hqq.solver` for asymmetric modes, compiled and fused per group (`nncf_hqq.solver._kernel`).

    :param weight: float16 or float32 weights, [..., group].
    :param scale: Initial scale, [..., 1]; None to start from NNCF's RTN scale and zero point.
    :param zero_point: Initial zero point, [..., 1], with `scale`.
    :param num_bits: Bit width of the integer grid.
    :param params: Solver parameters, `params.zero_point_storage` among them.
    :param importance: Per-weight factors of the scale search's squared errors, [..., group]; uniform when None.
    :param moments: Per-weight second moments of the activations each weight multiplies, [..., group]: the
        parameters are then the ones of least expected output error sum E[x^2] (W - s (Q - z))^2 among the solver's
        and the grid's (`_weighted_choice`); they also weight the scale search, in place of `importance`.
    :param codes: A C-contiguous uint8 array of the weight's size for the solver to write the codes into (memory
        that will become a constant's), or of half its size for 4-bit codes packed two a byte; a new one when None.
    :return: Best scale and zero point, float32 [groups, 1] (groups: the leading axes flattened), and the codes for
        them, uint8 [groups, group] (a view of `codes` when given; [groups, group / 2] when packed), see
        `nncf_hqq.solver._kernel.solve_asymmetric`.
    """

    group_size = weight.shape[-1]
    weight_values = kernel_values(weight.as_numpy_tensor().data).reshape(-1, group_size)
    no_values = np.zeros(0, np.float32)
    importance = importance if moments is None else moments
    grid, refits = _moment_grid(moments)
    refit = {HQQZeroPointStorage.INTEGER: 0, HQQZeroPointStorage.OFFSET: 1, HQQZeroPointStorage.FLOAT16: 2}
    # numba loads the compiled kernel (or compiles it) on its first call; a signal is taken after the kernel
    with _garbage_collection_paused(), signals_deferred():
        from nncf_hqq.solver._kernel import solve_asymmetric

        best_scale, best_zero_point, codes = solve_asymmetric(
            weight_values,
            no_values if scale is None else _as_array(scale, (-1,)),
            no_values if scale is None else _as_array(zero_point, (-1,)),
            np.zeros((0, 0), np.float32) if importance is None else _as_array(importance, (-1, group_size)),
            np.float32(2**num_bits - 1),
            params.lp_norm,
            params.beta,
            params.kappa,
            params.iterations(asymmetric=True),
            _patience(params, asymmetric=True),
            params.scale_search_steps,
            SCALE_SEARCH_STEP,
            params.clip_extremes,
            refit[params.zero_point_storage],
            grid,
            refits,
            _codes_array(codes, weight_values.shape, np.uint8),
        )
    return Tensor(best_scale[:, None]), Tensor(best_zero_point[:, None]), Tensor(codes)


def solve_symmetric_fused(
    weight: Tensor,
    scale: Tensor | None,
    num_bits: int,
    params: AdvancedHQQParameters,
    codes: np.ndarray | None = None,
    moments: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """
    The solver of `nncf_hqq.solver` for symmetric modes, compiled and fused per group
    (`nncf_hqq.solver._kernel.solve_symmetric`).

    :param weight: float16 or float32 weights, [..., group].
    :param scale: Initial (signed) scale, [..., 1]; None to start from NNCF's symmetric scale.
    :param num_bits: Bit width of the integer grid.
    :param params: Solver parameters.
    :param codes: As in `solve_asymmetric_fused`, int8 (packed 4-bit codes: uint8, two's complement nibbles).
    :param moments: As in `solve_asymmetric_fused` (the grid's scales are NNCF's times the factors).
    :return: Best scale, float32 [groups, 1] (groups: the leading axes flattened), and the codes for it, int8
        [groups, group] (a view of `codes` when given; uint8 [groups, group / 2] when packed), see
        `nncf_hqq.solver._kernel.solve_symmetric`.
    """
    group_size = weight.shape[-1]
    weight_values = kernel_values(weight.as_numpy_tensor().data).reshape(-1, group_size)
    grid, refits = _moment_grid(moments)
    with _garbage_collection_paused(), signals_deferred():
        from nncf_hqq.solver._kernel import solve_symmetric

        best_scale, codes = solve_symmetric(
            weight_values,
            np.zeros(0, np.float32) if scale is None else _as_array(scale, (-1,)),
            np.zeros((0, 0), np.float32) if moments is None else _as_array(moments, (-1, group_size)),
            np.float32(-(2 ** (num_bits - 1))),
            np.float32(2 ** (num_bits - 1) - 1),
            params.lp_norm,
            params.beta,
            params.kappa,
            params.iterations(asymmetric=False),
            _patience(params, asymmetric=False),
            params.clip_extremes,
            grid,
            refits,
            _codes_array(codes, weight_values.shape, np.int8),
        )
    return Tensor(best_scale[:, None]), Tensor(codes)


def _moment_grid(moments: Tensor | None) -> tuple[np.ndarray, int]:
    """The kernels' grid factors and refits: `MOMENT_GRID` and `MOMENT_REFITS` with moments, none without."""
    if moments is None:
        return np.zeros(0, np.float32), 0
    return np.asarray(MOMENT_GRID, np.float32), MOMENT_REFITS


def _codes_array(codes: np.ndarray | None, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """
    `codes` seen as [groups, group] for the kernel to fill, or as [groups, group / 2] when it is uint8 of half the
    size (two 4-bit codes a byte); a new [groups, group] array of `dtype` when None.
    """
    if codes is None:
        return np.empty(shape, dtype)
    groups, group = shape
    if codes.flags.c_contiguous and codes.dtype == dtype and codes.size == groups * group:
        return codes.reshape(shape)
    if codes.flags.c_contiguous and codes.dtype == np.uint8 and group % 2 == 0 and codes.size * 2 == groups * group:
        return codes.reshape(groups, group // 2)
    msg = (
        f"The codes array must be C-contiguous {np.dtype(dtype)} of {groups * group} elements, or uint8 of "
        f"{groups * group // 2} bytes (4-bit codes, two a byte)."
    )
    raise nncf.InternalError(msg)


def _patience(params: AdvancedHQQParameters, asymmetric: bool) -> int:
    """`params.patience` as the kernels take it: None (never stop early) as one more than the iterations."""
    return params.iterations(asymmetric) + 1 if params.patience is None else params.patience


def _as_array(x: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """The values of `x` as float32, contiguous in `shape`."""
    return np.ascontiguousarray(x.as_numpy_tensor().data, dtype=np.float32).reshape(shape)


@contextlib.contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """
    Python's cyclic garbage collector off for the block (as it was after). Loading numba and the compiled kernel
    creates tens of thousands of long-lived objects, for which the collector scans the whole heap of the process
    (one that holds OpenVINO, NNCF and a model: 0.1 s a time); measured here, the first solve's fixed cost went
    from 0.33 to 0.20 s. The kernel itself allocates almost no Python objects; when numba compiles it (the first use
    after an install) the pause added 13 MiB to the process's peak memory.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
