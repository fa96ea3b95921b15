"""
Equalization's compiled passes: the float16 scaling of a weight by its factors gives numpy's values bit for bit;
the weighted sums of |W| behind power scales are numpy's up to float rounding.
"""

import numpy as np
import pytest

from nncf_hqq.equalization._kernel import weighted_abs_sums
from nncf_hqq.equalization.algorithm import EqualizationPlan


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 1), (1, 0)])
def test_float16_scaling_equals_numpy_in_float32_rounded_to_float16(axes):
    rng = np.random.default_rng(0)
    # every float16 bit pattern (subnormals, infinities and NaNs included) among the weights
    value = np.concatenate([np.arange(2**16, dtype=np.uint16), rng.integers(0, 2**16, 3 * 2**16, dtype=np.uint16)])
    value = value.view(np.float16).reshape(512, 512)
    plan = EqualizationPlan()
    for axis in axes:  # factors over the range equalization uses, some making values overflow or underflow
        plan.multiply("w", axis, np.exp2(rng.uniform(-14, 14, value.shape[axis])).astype(np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        expected = plan.apply("w", value).astype(np.float16)
    got = plan.apply_keeping_float16("w", value)
    assert got.dtype == np.float16
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint16), expected[~nan].view(np.uint16))


def test_float32_and_3d_values_are_scaled_as_apply_gives_them():
    plan = EqualizationPlan()
    plan.multiply("w", 1, np.array([2.0, 0.5], np.float32))
    value32 = np.array([[1.0, 3.0]], np.float32)
    np.testing.assert_array_equal(plan.apply_keeping_float16("w", value32), plan.apply("w", value32))
    value3d = np.ones((2, 1, 2), np.float16)
    np.testing.assert_array_equal(plan.apply_keeping_float16("w", value3d), plan.apply("w", value3d).astype(np.float16))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("down_columns", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_weighted_abs_sums_are_numpys_in_float64(dtype, down_columns, weighted):
    rng = np.random.default_rng(1)
    value = (rng.standard_t(3, size=(300, 70)) * 0.02).astype(dtype)  # 300 rows: tasks of 128 and a remainder
    axis = 0 if down_columns else 1
    factors = rng.uniform(0.1, 8.0, value.shape[axis]).astype(np.float32) if weighted else np.zeros(0, np.float32)
    magnitudes = np.abs(value.astype(np.float64))
    if weighted:
        magnitudes *= factors.astype(np.float64)[:, None] if down_columns else factors.astype(np.float64)[None, :]
    expected = magnitudes.sum(axis=axis)
    got = weighted_abs_sums(value.view(np.uint16) if dtype == np.float16 else value, factors, down_columns)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # the same sums however many threads run them
    assert np.array_equal(
        got, weighted_abs_sums(value.view(np.uint16) if dtype == np.float16 else value, factors, down_columns)
    )
