"""
The math of data-free equalization on `nncf.tensor` Tensors: per-input-channel scales c for a group of weights
sharing an input.

Notation: the group's weights W_m [out_m, in_m] read channel k = map_m(j) at column j; W'_m = W_m diag(1/c[map_m])
is quantized, Q(.) being group-wise quantization along the input axis, and the model computes with
c[map_m] * Q(W'_m) in place of W_m: c moves magnitude between the columns of each quantization group.

Scales:
- `power_scales`: c_k = (mean over the group's rows of |W_ik|)^alpha (alpha = 1: NNCF's data-free AWQ statistic),
- `sinkhorn_scales`: column scales that balance the standard deviations of the rows and of the columns of each
  tile of `group_size` input columns (Sinkhorn-Knopp in the log domain, as SINQ, arXiv 2509.22944), normalised to
  a median of 1,
each bounded to [1 / MAX_SCALE, MAX_SCALE] (power scales after normalisation to a geometric mean of 1).
"""

import math

import numpy as np
from nncf.tensor import Tensor
from nncf.tensor import functions as fns

# bound of c (after normalisation): activations change by at most this factor
MAX_SCALE = 8.0
# Sinkhorn-Knopp steps per tile (SINQ's pre-SINQ default), and SINQ's bounds of the deviations its target and
# steps are computed from
SINKHORN_ITERATIONS = 4
SINKHORN_STD_BOUNDS = (1e-3, 1e3)


def columns_by_channel(weights: list[Tensor], channel_maps: list[np.ndarray | None], num_channels: int) -> Tensor:
    """
    The group's weights as one matrix whose columns are channels: [sum of rows (times the columns mapped to each
    channel), num_channels]. Weights are float32 [out, in] (input channels last).
    """
    blocks = []
    for weight, channel_map in zip(weights, channel_maps, strict=True):
        if channel_map is None:
            blocks.append(weight)
            continue
        # columns j with the same channel: stack them as extra rows, in channel order
        order = np.argsort(channel_map, kind="stable")
        repeats = len(channel_map) // num_channels
        permuted = weight.as_numpy_tensor().data[:, order]  # [out, num_channels * repeats], channel-major
        blocks.append(Tensor(permuted.reshape(-1, num_channels, repeats).transpose(0, 2, 1).reshape(-1, num_channels)))
    return fns.concatenate(blocks, axis=0)


def normalized(c: Tensor) -> Tensor:
    """c / geometric mean(c), bounded to [1 / MAX_SCALE, MAX_SCALE]."""
    log_c = fns.log2(fns.maximum(c, 1e-30))
    return fns.clip(2.0 ** (log_c - fns.mean(log_c)), 1.0 / MAX_SCALE, MAX_SCALE)


def power_scales(columns: Tensor, alpha: float) -> Tensor:
    """c_k = mean_i(|W_ik|)^alpha, normalised."""
    return power_scales_of_means(fns.mean(fns.abs(columns), axis=0), alpha)


def power_scales_of_means(mean_abs: Tensor, alpha: float) -> Tensor:
    """`power_scales` from the channels' mean_i |W_ik| (at least 1e-12), [num_channels]."""
    return normalized(fns.power(fns.maximum(mean_abs, 1e-12), alpha))


def sinkhorn_scales(columns: Tensor, group_size: int, iterations: int = SINKHORN_ITERATIONS) -> Tensor:
    """
    Column scales c that balance W diag(1/c) (with row scales r, discarded: rows do not change a group-wise
    quantization along the input axis), per tile of `group_size` columns, as SINQ's Sinkhorn-Knopp (arXiv
    2509.22944, its foldable "pre-SINQ" form). Per tile, with b(.) the bound of a deviation to
    SINKHORN_STD_BOUNDS and t the smallest bounded row or column standard deviation of the tile as given (fixed),
    in the log domain:

        log c_j <- clip(log c_j + log clip(b(std_j) / t, 0.7, 2), -0.3, 10)   (std of column j of W / (c r))
        log r_i <- clip(log r_i + log clip(b(std_i) / t, 0.7, 2), -0.3, 10)   (std of row i)

    `iterations` times (the iterate the last update makes is not scored, as in SINQ), keeping the iterate of least
    imbalance max(std) / min(std) over rows and columns, and leaving a tile's scales as they are once its imbalance
    has risen above the least seen. c is divided by its median over all channels, then bounded to
    [1 / MAX_SCALE, MAX_SCALE] (SINQ bounds only the steps: the bound keeps activations well inside f16's range).
    """
    rows, num_channels = columns.shape
    group_size = num_channels if group_size <= 0 or num_channels % group_size else group_size
    tiles = fns.transpose(columns.reshape((rows, num_channels // group_size, group_size)), (1, 0, 2))  # [T, R, G]
    squares = tiles * tiles

    def deviations(inv_col: Tensor, inv_row: Tensor) -> tuple[Tensor, Tensor]:
        """Row [T, R, 1] and column [T, 1, G] standard deviations of W_ij / (c_j r_i), by matrix-vector products."""
        row_mean = fns.matmul(tiles, fns.transpose(inv_col, (0, 2, 1))) / group_size
        row_square = fns.matmul(squares, fns.transpose(inv_col * inv_col, (0, 2, 1))) / group_size
        col_mean = fns.matmul(fns.transpose(inv_row, (0, 2, 1)), tiles) / rows
        col_square = fns.matmul(fns.transpose(inv_row * inv_row, (0, 2, 1)), squares) / rows
        # with Bessel's correction, as SINQ's
        row_var = fns.maximum(row_square - row_mean * row_mean, 0.0) * (group_size / max(group_size - 1, 1))
        col_var = fns.maximum(col_square - col_mean * col_mean, 0.0) * (rows / max(rows - 1, 1))
        return fns.maximum(row_var**0.5 * inv_row, 1e-12), fns.maximum(col_var**0.5 * inv_col, 1e-12)

    def imbalance(row_std: Tensor, col_std: Tensor) -> Tensor:
        largest = fns.maximum(fns.max(col_std, axis=2, keepdims=True), fns.max(row_std, axis=1, keepdims=True))
        smallest = fns.minimum(fns.min(col_std, axis=2, keepdims=True), fns.min(row_std, axis=1, keepdims=True))
        return largest / smallest  # [T, 1, 1]

    # base 2 (nncf.tensor has log2): SINQ's natural-log bounds [-0.3, 10] divided by ln 2
    low, high = -0.3 / math.log(2.0), 10.0 / math.log(2.0)
    log_col = fns.zeros_like(tiles[:, :1, :])  # [T, 1, G]: log2 c
    log_row = fns.zeros_like(tiles[:, :, :1])  # [T, R, 1]: log2 r
    row_std, col_std = deviations(2.0**-log_col, 2.0**-log_row)
    # SINQ's bounds of the deviations that set the target and the steps (in the weights' units)
    low_std, high_std = SINKHORN_STD_BOUNDS
    target = fns.minimum(
        fns.min(fns.clip(col_std, low_std, high_std), axis=2, keepdims=True),
        fns.min(fns.clip(row_std, low_std, high_std), axis=1, keepdims=True),
    )
    best_log_col, least = log_col, imbalance(row_std, col_std)
    running = fns.ones_like(least)  # 0 once a tile's imbalance has risen above its least
    for step in range(iterations):
        if step > 0:
            row_std, col_std = deviations(2.0**-log_col, 2.0**-log_row)
            current = imbalance(row_std, col_std)
            best_log_col = fns.where(current <= least, log_col, best_log_col)
            least = fns.minimum(least, current)
            running = fns.where(current > least, 0.0, running)
        col_step = fns.clip(fns.clip(col_std, low_std, high_std) / target, 0.7, 2.0)
        row_step = fns.clip(fns.clip(row_std, low_std, high_std) / target, 0.7, 2.0)
        log_col = fns.clip(log_col + running * fns.log2(col_step), low, high)
        log_row = fns.clip(log_row + running * fns.log2(row_step), low, high)
    c = 2.0 ** best_log_col.reshape((-1,))
    return fns.clip(c / fns.median(c), 1.0 / MAX_SCALE, MAX_SCALE)
