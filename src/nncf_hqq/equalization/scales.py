"""
The math of data-free equalization on `nncf.tensor` Tensors: per-input-channel scales c for a group of weights
sharing an input.

Notation: the group's weights W_m [out_m, in_m] read channel k = map_m(j) at column j; W'_m = W_m diag(1/c[map_m])
is quantized, Q(.) being group-wise quantization along the input axis, and the model computes with
c[map_m] * Q(W'_m) in place of W_m: c moves magnitude between the columns of each quantization group.

Scales:
- `power_scales`: c_k = (mean over the group's rows of |W_ik|)^alpha (alpha = 1: NNCF's data-free AWQ statistic),
- `sinkhorn_scales`: column scales that balance the standard deviations of the rows and of the columns of each
  tile of `group_size` input columns (Sinkhorn-Knopp in the log domain, as SINQ, arXiv 2509.22944),
each normalised to a geometric mean of 1 and bounded to [1 / MAX_SCALE, MAX_SCALE].
"""

import numpy as np
from nncf.tensor import Tensor
from nncf.tensor import functions as fns

# bound of c (after normalisation to a geometric mean of 1): activations change by at most this factor
MAX_SCALE = 8.0


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


def sinkhorn_scales(columns: Tensor, group_size: int, iterations: int = 16) -> Tensor:
    """
    Column scales c that balance the matrix W diag(1/c) (and its row scales, discarded: rows do not change a
    group-wise quantization along the input axis), per tile of `group_size` columns: in the log domain, repeatedly
    divide every column and every row by its standard deviation relative to the tile's smallest, each step's
    factor bounded to [0.7, 2], and keep the iterate with the least imbalance max(std) / min(std). Normalised.
    """
    rows, num_channels = columns.shape
    group_size = num_channels if group_size <= 0 or num_channels % group_size else group_size
    tiles = fns.transpose(columns.reshape((rows, num_channels // group_size, group_size)), (1, 0, 2))  # [T, R, G]
    squares = tiles * tiles
    # the standard deviations of W_ij / (c_j r_i) by matrix-vector products: one pass over the tile per moment
    inv_col = fns.ones_like(tiles[:, :1, :])  # [T, 1, G]: 1 / c
    inv_row = fns.ones_like(tiles[:, :, :1])  # [T, R, 1]: 1 / r
    best_inv_col, best_imbalance = inv_col, None
    for _ in range(iterations + 1):
        row_mean = fns.matmul(tiles, fns.transpose(inv_col, (0, 2, 1))) / group_size  # [T, R, 1]
        row_square = fns.matmul(squares, fns.transpose(inv_col * inv_col, (0, 2, 1))) / group_size
        col_mean = fns.matmul(fns.transpose(inv_row, (0, 2, 1)), tiles) / rows  # [T, 1, G]
        col_square = fns.matmul(fns.transpose(inv_row * inv_row, (0, 2, 1)), squares) / rows
        row_std = fns.maximum(fns.maximum(row_square - row_mean * row_mean, 0.0) ** 0.5 * inv_row, 1e-12)
        col_std = fns.maximum(fns.maximum(col_square - col_mean * col_mean, 0.0) ** 0.5 * inv_col, 1e-12)
        smallest = fns.minimum(fns.min(col_std, axis=2, keepdims=True), fns.min(row_std, axis=1, keepdims=True))
        largest = fns.maximum(fns.max(col_std, axis=2, keepdims=True), fns.max(row_std, axis=1, keepdims=True))
        imbalance = largest / smallest  # [T, 1, 1]
        if best_imbalance is None:
            best_imbalance = imbalance
        better = imbalance < best_imbalance
        best_imbalance = fns.where(better, imbalance, best_imbalance)
        best_inv_col = fns.where(better, inv_col, best_inv_col)
        inv_col = inv_col / fns.clip(col_std / smallest, 0.7, 2.0)
        inv_row = inv_row / fns.clip(row_std / smallest, 0.7, 2.0)
    return normalized(1.0 / best_inv_col.reshape((-1,)))
