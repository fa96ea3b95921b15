"""The estimated output error of candidate channel scales (`scales.estimated_error`), compiled with numba."""

from nncf_hqq._numba import FASTMATH as _FASTMATH  # isort: skip (numba's settings first)
import numba
import numpy as np


@numba.njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def rtn_errors(weight, channel_map, scales, activation, group_size, q_max):
    """
    err(c) = sum_ij a_k^2 (W_ij - c_k Q(W_ij / c_k))^2, k = channel_map[j], for each candidate c (a row of `scales`),
    Q being NNCF's asymmetric round-to-nearest per group of `group_size` along j.

    :param weight: float32 [rows, in], input channels last.
    :param channel_map: int64 [in], the channel of each column.
    :param scales: float32 [candidates, channels].
    :param activation: float32 [channels], a_k.
    :param group_size: Columns per group (dividing `in`).
    :param q_max: 2^bits - 1.
    :return: float64 [candidates].
    """
    rows, columns = weight.shape
    candidates = scales.shape[0]
    groups = columns // group_size
    totals = np.zeros((rows, candidates), np.float64)
    for i in numba.prange(rows):
        w = weight[i]
        u = np.empty(group_size, np.float32)
        for candidate in range(candidates):
            total = 0.0
            for g in range(groups):
                low, high = np.float32(0.0), np.float32(0.0)
                for t in range(group_size):
                    j = g * group_size + t
                    u[t] = w[j] / scales[candidate, channel_map[j]]
                    low = min(low, u[t])
                    high = max(high, u[t])
                step = (high - low) / q_max
                step = max(step, np.finfo(np.float32).eps)
                zero_point = min(max(-np.rint(low / step), np.float32(0.0)), q_max)
                group_total = np.float32(0.0)
                for t in range(group_size):
                    j = g * group_size + t
                    k = channel_map[j]
                    code = min(max(np.rint(u[t] / step + zero_point), np.float32(0.0)), q_max)
                    error = (u[t] - (code - zero_point) * step) * scales[candidate, k] * activation[k]
                    group_total += error * error
                total += group_total
            totals[i, candidate] = total
    return totals.sum(axis=0)
