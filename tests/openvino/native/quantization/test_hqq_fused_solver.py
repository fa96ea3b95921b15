"""The compiled solvers (`nncf_hqq.solver._kernel`) against the numpy reference solver."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest
from nncf import CompressWeightsMode
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.quantization.algorithms.weight_compression.weight_lowering import calculate_integer_quantization_params
from nncf.quantization.algorithms.weight_compression.weight_lowering import do_integer_quantization
from nncf.tensor import Tensor
from nncf.tensor import TensorDataType
from numba.core.codegen import get_host_cpu_features

from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import HQQZeroPointStorage
from nncf_hqq._float16 import float16_bits
from nncf_hqq.solver import solve_asymmetric_fused
from nncf_hqq.solver import solve_symmetric_fused
from nncf_hqq.solver._kernel import _abs_pow
from tests.openvino.native.models import heavy_tailed_weight
from tests.openvino.native.quantization.hqq_reference import _quantize
from tests.openvino.native.quantization.hqq_reference import solve

GROUP = 64


def _groups(seed: int = 0) -> np.ndarray:
    """4096 heavy-tailed f16-representable groups, among them constant and all-zero ones."""
    weight = heavy_tailed_weight((4096, GROUP), seed=seed)
    weight[:8] = 0.0
    weight[8:16] = 0.01
    weight[16:24] = -0.01
    return weight.astype(np.float16).astype(np.float32)


def _rtn(weight: np.ndarray) -> tuple[Tensor, Tensor]:
    config = WeightCompressionConfig(mode=CompressWeightsMode.INT4_ASYM, group_size=GROUP)
    scale, zero_point = calculate_integer_quantization_params(Tensor(weight), (1,), config)
    return scale, zero_point.astype(scale.dtype)


def _lp_error(weight: np.ndarray, scale: Tensor, zero_point: Tensor, p: float) -> np.ndarray:
    return _quantize(Tensor(weight), scale, zero_point, 0, 15, p)[-1].data.ravel().astype(np.float64)


CASES = {
    "default": (AdvancedHQQParameters(), False),
    "search": (AdvancedHQQParameters(scale_search_steps=7), False),
    "search_only": (AdvancedHQQParameters(num_iterations=0, scale_search_steps=7), False),
    "l1": (AdvancedHQQParameters(lp_norm=1.0), False),
    "three_iterations": (AdvancedHQQParameters(num_iterations=3), False),
    "ten_iterations_every_one": (AdvancedHQQParameters(num_iterations=10, patience=None), False),
    "ten_iterations_patience_1": (AdvancedHQQParameters(num_iterations=10, patience=1), False),
    "search_ten_iterations_patience_2": (
        AdvancedHQQParameters(num_iterations=10, patience=2, scale_search_steps=7),
        False,
    ),
    "no_search_clipping": (AdvancedHQQParameters(scale_search_steps=0, clip_extremes=True), False),
    "importance": (AdvancedHQQParameters(scale_search_steps=7), True),
    "offset": (AdvancedHQQParameters(zero_point_storage=HQQZeroPointStorage.OFFSET), False),
    "float16": (AdvancedHQQParameters(zero_point_storage=HQQZeroPointStorage.FLOAT16), False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_solver_matches_the_reference_solver_up_to_float_rounding(case):
    """
    Same parameters except where candidates tie to float rounding: the zero point agrees (to 1e-3, refitted float
    ones) in almost every group, the scale to 1e-5, every group's objective to 1e-2 (ties followed by iterations)
    and the total to 1e-5.
    """
    params, weighted = CASES[case]
    weight = _groups()
    importance = None
    if weighted:
        factors = np.random.default_rng(1).lognormal(0.0, 1.0, size=GROUP).astype(np.float32)
        importance = Tensor(np.broadcast_to(factors, weight.shape).copy())
    scale, zero_point = _rtn(weight)
    reference = solve(Tensor(weight), scale, zero_point, 4, params, importance)
    fused = solve_asymmetric_fused(Tensor(weight), scale, zero_point, 4, params, importance)

    same_zero_point = np.abs(fused[1].data - reference[1].data) < 1e-3
    scale_difference = np.abs(fused[0].data / reference[0].data - 1)
    assert np.mean(same_zero_point) > 0.97
    assert np.mean(scale_difference < 1e-5) > 0.99
    fused_error = _lp_error(weight, *fused[:2], params.lp_norm)
    reference_error = _lp_error(weight, *reference, params.lp_norm)
    assert np.all(np.abs(fused_error - reference_error) <= 1e-2 * reference_error + 1e-12)
    assert abs(fused_error.sum() / reference_error.sum() - 1) < 1e-5


def test_fused_solver_reads_float16_weights_and_starts_from_nncf_rtn():
    """
    f16 weights without a start: with nothing to improve (no search, no iteration) the result is exactly NNCF's
    RTN of their f32 values; with the default parameters it agrees with the f32 weights started from that RTN
    up to float rounding (the two specialisations are compiled separately, and numba's cached code may sum in
    another order than a fresh compile).
    """
    weight = _groups(seed=4)
    rtn = _rtn(weight)
    start_only = AdvancedHQQParameters(num_iterations=0, scale_search_steps=0)
    from_float16 = solve_asymmetric_fused(Tensor(weight.astype(np.float16)), None, None, 4, start_only)
    assert np.array_equal(from_float16[0].data, rtn[0].data)
    assert np.array_equal(from_float16[1].data, rtn[1].data)

    params = AdvancedHQQParameters()
    from_float16 = solve_asymmetric_fused(Tensor(weight.astype(np.float16)), None, None, 4, params)
    from_float32 = solve_asymmetric_fused(Tensor(weight), *rtn, 4, params)
    assert np.mean(from_float16[1].data == from_float32[1].data) > 0.97
    assert np.all(np.isfinite(from_float16[0].data)) and np.all(from_float16[0].data > 0)
    float16_error = _lp_error(weight, *from_float16[:2], params.lp_norm)
    float32_error = _lp_error(weight, *from_float32[:2], params.lp_norm)
    assert abs(float16_error.sum() / float32_error.sum() - 1) < 1e-5


def test_fused_solver_is_never_worse_than_its_start():
    weight = _groups(seed=5)
    scale, zero_point = _rtn(weight)
    params = AdvancedHQQParameters()
    fused = solve_asymmetric_fused(Tensor(weight), scale, zero_point, 4, params)
    fused_error = _lp_error(weight, *fused[:2], params.lp_norm)
    rtn_error = _lp_error(weight, scale, zero_point, params.lp_norm)
    assert np.all(fused_error <= rtn_error * (1 + 1e-6))
    assert np.mean(fused_error < rtn_error) > 0.5


SYMMETRIC_CASES = {
    "default": AdvancedHQQParameters(),  # up to 20 iterations in symmetric modes, patience 2
    "every_iteration": AdvancedHQQParameters(patience=None),
    # the L1 objective is flat between some scales: a tie decides whether a group stops, so every iteration runs
    "l1": AdvancedHQQParameters(lp_norm=1.0, patience=None),
    "one_iteration": AdvancedHQQParameters(num_iterations=1),
    "patience_1": AdvancedHQQParameters(patience=1),
    "clipping": AdvancedHQQParameters(clip_extremes=True, patience=None),
}


@pytest.mark.parametrize("num_bits", [4, 8])
@pytest.mark.parametrize("case", list(SYMMETRIC_CASES))
def test_fused_symmetric_solver_matches_the_reference_solver_up_to_float_rounding(case, num_bits):
    """
    From NNCF's signed symmetric scale: the scale keeps its sign and agrees to 1e-5 in almost every group (the
    groups it improves are the reference's; the L1 objective is flat between some scales, a tie may go either
    way), the total lp error agrees to 1e-5 and no group gets worse than its start beyond float rounding; f16
    weights give the result of their f32 values.
    """
    params = SYMMETRIC_CASES[case]
    weight = _groups(seed=6)
    mode = CompressWeightsMode.INT4_SYM if num_bits == 4 else CompressWeightsMode.INT8_SYM
    scale, _ = calculate_integer_quantization_params(Tensor(weight), (1,), WeightCompressionConfig(mode=mode))
    assert (scale.data < 0).any() and (scale.data > 0).any()  # NNCF's signed scales, both signs covered
    reference = solve(Tensor(weight), scale, None, num_bits, params)[0].data
    levels = (-(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1)
    error = lambda s: _quantize(Tensor(weight), Tensor(s), None, *levels, params.lp_norm)[-1].data.astype(np.float64)
    for dtype in (np.float32, np.float16):
        fused, codes = solve_symmetric_fused(Tensor(weight.astype(dtype)), scale, num_bits, params)
        fused, codes = fused.data, codes.data
        assert np.array_equal(np.sign(fused), np.sign(reference))
        assert np.mean(np.abs(fused / reference - 1) < 1e-5) > 0.95
        assert abs(error(fused).sum() / error(reference).sum() - 1) < 1e-5
        start_error, fused_error = error(scale.data), error(fused)
        assert np.all(fused_error <= start_error * (1 + 1e-5))
        assert abs(np.mean(fused_error < start_error) - np.mean(error(reference) < start_error)) < 0.01
        assert np.mean(fused_error < start_error) > 0.2
        # the codes are those NNCF computes from the scale
        config = WeightCompressionConfig(mode=mode)
        nncf_codes = do_integer_quantization(Tensor(weight), config, (1,), Tensor(fused)).tensor.as_numpy_tensor()
        assert codes.dtype == np.int8 and np.mean(codes == nncf_codes.data) > 0.9999


@pytest.mark.parametrize("num_bits", [4, 8])
def test_fused_symmetric_solver_starts_from_nncf_scale_and_then_improves_it(num_bits):
    weight = _groups(seed=8)
    mode = CompressWeightsMode.INT4_SYM if num_bits == 4 else CompressWeightsMode.INT8_SYM
    nncf_scale, _ = calculate_integer_quantization_params(Tensor(weight), (1,), WeightCompressionConfig(mode=mode))
    start_only = solve_symmetric_fused(
        Tensor(weight.astype(np.float16)), None, num_bits, AdvancedHQQParameters(num_iterations=0)
    )
    assert np.array_equal(start_only[0].data, nncf_scale.data)
    params = AdvancedHQQParameters()
    from_nncf = solve_symmetric_fused(Tensor(weight), None, num_bits, params)[0].data
    given = solve_symmetric_fused(Tensor(weight), nncf_scale, num_bits, params)[0].data
    assert np.array_equal(from_nncf, given)


@pytest.mark.parametrize("asymmetric", [True, False])
def test_patience_stops_each_group_early_without_going_below_its_start(asymmetric):
    """
    A group's iterates are the same until it stops, so with a patience its result is the best of a prefix of those
    without: never better than running every iteration, never worse than the start, and the same where the patience
    exceeds the iterations. Patience 1 leaves some groups short of what more iterations find.
    """
    weight = _groups(seed=9)
    if asymmetric:
        start = _rtn(weight)
        error = lambda result: _lp_error(weight, *result[:2], 0.7)
        run = lambda params: solve_asymmetric_fused(Tensor(weight), *start, 4, params)
    else:
        config = WeightCompressionConfig(mode=CompressWeightsMode.INT4_SYM)
        start = calculate_integer_quantization_params(Tensor(weight), (1,), config)[:1]
        error = lambda result: _quantize(Tensor(weight), result[0], None, -8, 7, 0.7)[-1].data.ravel()
        run = lambda params: solve_symmetric_fused(Tensor(weight), start[0], 4, params)
    every = run(AdvancedHQQParameters(num_iterations=20, patience=None))
    patient = run(AdvancedHQQParameters(num_iterations=20, patience=1))
    never = run(AdvancedHQQParameters(num_iterations=20, patience=21))
    assert all(np.array_equal(a.data, b.data) for a, b in zip(every, never, strict=True))
    assert np.all(error(patient) >= error(every) * (1 - 1e-6))
    assert np.all(error(patient) <= error((*start, None)) * (1 + 1e-6))
    assert np.mean(error(patient) > error(every) * (1 + 1e-4)) > 0.01
    assert np.mean(error(patient) < error((*start, None)) * (1 - 1e-4)) > 0.1


def test_fused_symmetric_solver_marks_non_finite_groups():
    weight = _groups(seed=7)
    weight[30, 3], weight[31, 0] = np.nan, np.inf
    config = WeightCompressionConfig(mode=CompressWeightsMode.INT4_SYM)
    scale, _ = calculate_integer_quantization_params(Tensor(np.nan_to_num(weight)), (1,), config)
    fused = solve_symmetric_fused(Tensor(weight), scale, 4, AdvancedHQQParameters())[0].data.ravel()
    assert np.isnan(fused[30]) and np.isnan(fused[31]) and np.isfinite(np.delete(fused, [30, 31])).all()


@pytest.mark.parametrize("storage", list(HQQZeroPointStorage))
@pytest.mark.parametrize(("dtype", "num_bits"), [(np.float32, 4), (np.float16, 4), (np.float32, 8)])
def test_fused_solver_codes_are_those_nncf_computes_from_its_parameters(storage, dtype, num_bits):
    """NNCF's integer quantization, given the solver's scale and zero point, gives the codes the solver returns."""
    weight = _groups(seed=6).astype(dtype)
    params = AdvancedHQQParameters(zero_point_storage=storage)
    scale, zero_point, codes = solve_asymmetric_fused(Tensor(weight), None, None, num_bits, params)
    mode = CompressWeightsMode.INT4_ASYM if num_bits == 4 else CompressWeightsMode.INT8_ASYM
    config = WeightCompressionConfig(mode=mode, group_size=GROUP)
    if storage == HQQZeroPointStorage.INTEGER:
        zero_point = zero_point.astype(TensorDataType.int32)
    nncf_codes = do_integer_quantization(Tensor(weight), config, None, scale, zero_point).tensor
    np.testing.assert_array_equal(codes.data, nncf_codes.as_numpy_tensor().data)


@pytest.mark.parametrize("p", [0.3, 0.7, 1.0])
def test_vectorisable_power_matches_numpy(p):
    """The fused solver's |x|^p (polynomial log2 and exp2) against float64 numpy, over the normal float32 range."""
    magnitudes = np.exp(np.random.default_rng(0).uniform(np.log(1.2e-38), np.log(1e4), 20000))
    x = np.concatenate([magnitudes, -magnitudes[:1000], [0.0, -0.0]]).astype(np.float32)
    result = np.array([_abs_pow(value, np.float32(p)) for value in x], dtype=np.float64)
    expected = np.abs(x).astype(np.float64) ** p
    assert np.all(result[-2:] == 0.0)
    relative_error = np.abs(result[:-2] / expected[:-2] - 1)
    assert np.all(relative_error < 1e-5)
    assert np.all(relative_error[np.abs(x[:-2]) >= 1e-8] < 2e-6)


def test_float16_rounding_matches_numpy():
    """The kernels' float16 rounding (FLOAT16 zero points, equalized weights) against numpy's cast, ties included."""
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-16.0, 16.0, 20000),
            np.exp(rng.uniform(np.log(1e-9), np.log(7e4), 20000)) * rng.choice([-1.0, 1.0], 20000),
            np.arange(-4096, 4096) / 1024.0 + 1 / 2048.0,  # ties between float16 neighbours in [1, 4)
            [0.0, -0.0, 2.0**-14, 2.0**-24, 3 * 2.0**-25, 65504.0, 65519.0, 65520.0],
        ]
    ).astype(np.float32)
    with np.errstate(over="ignore"):  # 65520 rounds to infinity
        expected = values.astype(np.float16).view(np.uint16)
    result = np.array([float16_bits(value) for value in values], dtype=np.uint16)
    np.testing.assert_array_equal(result, expected)


def _numba_cpu_features_after_import(**environment: str) -> str:
    """numba's CPU features in a fresh process that imported the fused solver, with `environment` for numba's CPU."""
    code = "import numba, nncf_hqq.solver._kernel; print(repr(numba.config.CPU_FEATURES))"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_fused_solver_asks_for_512_bit_vectors_only_on_avx512_and_only_unless_the_user_chose():
    host = get_host_cpu_features()
    features = _numba_cpu_features_after_import().strip()
    if "+avx512f" in host.split(","):
        assert features == repr(f"{host},-prefer-256-bit")
    else:
        assert features == "None"
    assert _numba_cpu_features_after_import(NUMBA_CPU_FEATURES="+sse2").strip() == "'+sse2'"
    assert _numba_cpu_features_after_import(NUMBA_CPU_NAME="generic").strip() == "''"


class _KernelCalled(Exception):
    pass


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collection_is_paused_while_solving_and_restored_after(enabled, monkeypatch):
    seen = []

    def kernel(*args):
        seen.append(gc.isenabled())
        raise _KernelCalled

    monkeypatch.setattr("nncf_hqq.solver._kernel.solve_asymmetric", kernel)
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(_KernelCalled):
            solve_asymmetric_fused(Tensor(_groups()), None, None, 4, AdvancedHQQParameters())
        assert seen == [False]
        assert gc.isenabled() == enabled
    finally:
        gc.enable()


_SOLVE_AND_SAVE = """
import sys
import numpy as np
from nncf.tensor import Tensor
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq.solver import solve_asymmetric_fused, solve_symmetric_fused
weight = (np.random.default_rng(0).standard_t(3, size=(4096, 64)) * 0.02).astype(np.float16)
scale, zero_point, codes = solve_asymmetric_fused(Tensor(weight), None, None, 4, AdvancedHQQParameters())
symmetric_scale, _ = solve_symmetric_fused(Tensor(weight), None, 4, AdvancedHQQParameters())
np.savez(sys.argv[1], scale=scale.data, zero_point=zero_point.data, symmetric_scale=symmetric_scale.data)
"""


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known: a kernel compiled in the process gives some groups a scale 1 ulp away from the same kernel "
    "loaded from numba's cache (314 of 4096 here); not its one libm call (replacing powf changed nothing), not the "
    "FP environment (MXCSR), the input's alignment or the neighbouring groups; another threading layer differs too",
)
def test_kernels_compiled_in_the_process_and_loaded_from_numbas_cache_give_the_same_result(tmp_path):
    """
    The first run after an install compiles the kernels; later ones load them from numba's cache. Both should give
    the same parameters.
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    for run in ("compiled", "cached"):
        subprocess.run([sys.executable, "-c", _SOLVE_AND_SAVE, str(tmp_path / f"{run}.npz")], env=env, check=True)
    compiled, cached = np.load(tmp_path / "compiled.npz"), np.load(tmp_path / "cached.npz")
    assert any((tmp_path / "numba-cache").rglob("*.nbc"))  # the second run had a cache to load
    for name in compiled:
        np.testing.assert_array_equal(compiled[name], cached[name], err_msg=name)
