"""HQQ weighted by the activations' second moments, measured on a dataset: the statistics and the weighted solve."""

import nncf
import numpy as np
import openvino as ov
import pytest
from nncf import CompressWeightsMode
from nncf.tensor import Tensor

from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedEqualizationParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import compress_weights
from nncf_hqq.activation_moments import scaled_by_factors
from nncf_hqq.activation_moments import weight_input_moments
from nncf_hqq.equalization.algorithm import EqualizationRule
from nncf_hqq.solver import solve_asymmetric_fused
from nncf_hqq.solver import solve_symmetric_fused
from tests.openvino.native.models import constants
from tests.openvino.native.models import decompressed_weight
from tests.openvino.native.models import fold_equalization
from tests.openvino.native.models import heavy_tailed_weight
from tests.openvino.native.models import linear_model

INT4_ASYM, INT4_SYM = CompressWeightsMode.INT4_ASYM, CompressWeightsMode.INT4_SYM


def _anisotropic_samples(columns: int, count: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Activations [1, 4, columns] whose channel magnitudes span three decades (a few outlier channels)."""
    rng = np.random.default_rng(seed)
    magnitudes = np.exp(rng.uniform(-3.5, 3.5, columns)).astype(np.float32)
    return [(rng.standard_normal((1, 4, columns)) * magnitudes).astype(np.float32) for _ in range(count)]


def _expected_output_error(weight: np.ndarray, dequantized: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """sum_k E[x_k^2] (W - W_q)_ik^2 per group of 64 columns and row."""
    error = moments * (weight.astype(np.float64) - dequantized) ** 2
    return error.reshape(weight.shape[0], -1, 64).sum(-1)


@pytest.mark.parametrize("symmetric", [False, True])
def test_weighted_solve_lowers_the_expected_output_error_below_the_unweighted_one(symmetric):
    weight = heavy_tailed_weight((256, 64), seed=3) * 0.02
    moments = np.exp(np.random.default_rng(1).uniform(-4, 4, 64)).astype(np.float32)
    per_weight = Tensor(np.broadcast_to(moments, weight.shape).copy())
    params = AdvancedHQQParameters()

    def dequantized(given_moments):
        if symmetric:
            scale, codes = solve_symmetric_fused(Tensor(weight), None, 4, params, moments=given_moments)
            zero_point = 0.0
        else:
            scale, zero_point, codes = solve_asymmetric_fused(
                Tensor(weight), None, None, 4, params, moments=given_moments
            )
            zero_point = zero_point.data
        return scale.data * (codes.data.astype(np.float32) - zero_point)

    plain = _expected_output_error(weight, dequantized(None), moments)
    weighted = _expected_output_error(weight, dequantized(per_weight), moments)
    # HQQ's own parameters are a candidate: no group ends worse (up to float32 rounding), and the total is lower
    assert np.all(weighted <= plain * (1 + 1e-5) + 1e-12)
    assert weighted.sum() < 0.85 * plain.sum()


def test_moments_equal_a_direct_computation():
    weights = {"a": heavy_tailed_weight((32, 64), 1), "b": heavy_tailed_weight((16, 48), 2)}
    model = linear_model(weights)
    samples = [
        {"a_input": a, "b_input": b}
        for a, b in zip(_anisotropic_samples(64, seed=1), _anisotropic_samples(48, seed=2), strict=True)
    ]
    matmuls = {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"}
    moments, tokens = weight_input_moments(model, {name: matmuls[f"{name}_matmul"] for name in weights}, samples)
    assert tokens == 6 * 4
    for name in weights:
        x = np.concatenate([s[f"{name}_input"].reshape(-1, s[f"{name}_input"].shape[-1]) for s in samples])
        np.testing.assert_allclose(moments[name], (x.astype(np.float64) ** 2).mean(0), rtol=1e-5)


def test_equalizations_factors_transform_the_moments_exactly():
    from tests.openvino.native.quantization.test_hqq_equalization import _token_lm

    model, _ = _token_lm()
    samples = [{"input_ids": np.random.default_rng(i).integers(0, 97, (1, 16))} for i in range(3)]

    def measured(m: ov.Model) -> dict[str, np.ndarray]:
        matmuls = [op for op in m.get_ordered_ops() if op.get_type_name() == "MatMul"]
        weights = {mm.input_value(1).get_node().get_friendly_name(): mm for mm in matmuls}
        return weight_input_moments(m, weights, samples)[0]

    before = measured(model)
    plan = fold_equalization(model, EqualizationRule("power"), group_size=32)
    after = measured(model)
    assert plan.equalized and set(plan.factors) >= {"q", "k"}
    for name in ("q", "k"):
        expected = scaled_by_factors(before[name], plan.factors[name][1])
        assert not np.allclose(expected, before[name], rtol=1e-3)
        np.testing.assert_allclose(after[name], expected, rtol=1e-4)


def _dataset_model() -> tuple[ov.Model, dict[str, np.ndarray], nncf.Dataset, np.ndarray]:
    weights = {"w": heavy_tailed_weight((64, 128), 4) * 0.02}
    samples = _anisotropic_samples(128, count=8, seed=5)
    x = np.concatenate([s.reshape(-1, 128) for s in samples]).astype(np.float64)
    return linear_model(weights), weights, nncf.Dataset(samples), (x * x).mean(0)


@pytest.mark.parametrize("mode", [INT4_ASYM, INT4_SYM])
def test_a_dataset_makes_hqq_minimise_the_error_the_activations_see(mode):
    no_equalization = AdvancedEqualizationParameters(method="none")

    def compress(dataset=None, **hqq_params):
        model, weights, _, _ = _dataset_model()
        advanced = AdvancedCompressionParameters(
            hqq_params=AdvancedHQQParameters(**hqq_params), equalization_params=no_equalization
        )
        model = compress_weights(
            model, mode=mode, group_size=64, all_layers=True, hqq=True, dataset=dataset, advanced_parameters=advanced
        )
        return model, decompressed_weight(model, "w_matmul").reshape(weights["w"].shape)

    _, weights, dataset, moments = _dataset_model()
    data_free, plain = compress()
    data_aware, weighted = compress(dataset)
    opted_out, unweighted = compress(dataset, activation_moments=False)
    np.testing.assert_array_equal(unweighted, plain)
    error = lambda w_q: _expected_output_error(weights["w"], w_q, moments).sum()
    assert error(weighted) < 0.9 * error(plain)
    info = lambda m, key: m.get_rt_info(["nncf", "weight_compression", "hqq", key]).astype(str)
    assert info(data_aware, "activation_moments_source") == "dataset"
    assert info(data_aware, "activation_moments_tokens") == str(8 * 4)
    # the linear model takes no token ids: no random windows either
    assert info(data_free, "activation_moments_source") == "none" == info(opted_out, "activation_moments_source")


def test_an_empty_dataset_raises_validation_error_and_leaves_the_model_untouched():
    model, _, _, _ = _dataset_model()
    before = constants(model)
    with pytest.raises(nncf.ValidationError, match="activations"):
        compress_weights(model, mode=INT4_ASYM, group_size=64, all_layers=True, hqq=True, dataset=nncf.Dataset([]))
    after = constants(model)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


def test_without_a_dataset_a_token_model_is_weighted_by_random_token_windows(monkeypatch):
    import nncf_hqq.activation_moments
    from nncf_hqq.equalization.statistics import random_token_batches
    from tests.openvino.native.quantization.test_hqq_equalization import _token_lm

    def compress(dataset=None, **hqq_params):
        advanced = AdvancedCompressionParameters(hqq_params=AdvancedHQQParameters(bos_token_id=1, **hqq_params))
        model = compress_weights(
            _token_lm()[0], mode=INT4_ASYM, group_size=32, hqq=True, dataset=dataset, advanced_parameters=advanced
        )
        info = model.get_rt_info(["nncf", "weight_compression", "hqq", "activation_moments_source"]).astype(str)
        return list(constants(model).values()), info  # in graph order (auto-generated names differ per model)

    default, source = compress()
    assert source == "random_tokens"
    # the same as giving those windows as the dataset
    windows = list(random_token_batches(_token_lm()[0], 4, 128, 0, 1))
    given, given_source = compress(nncf.Dataset(windows))
    same = lambda a, b: len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # up to float rounding (the dataset's moments are measured on the folded model, the default's scaled by the
    # folded factors: the weighted refits then differ in the last bits, and a few codes at rounding boundaries)
    unweighted, unweighted_source = compress(activation_moments=False)
    codes = lambda values: np.concatenate([v.ravel() for v in values if v.dtype == np.uint8 and v.ndim == 3])
    assert given_source == "dataset" and unweighted_source == "none"
    assert np.mean(codes(default) != codes(given)) < 0.02 < 0.1 < np.mean(codes(default) != codes(unweighted))
    # a run of the model that would not fit in memory is not made: the errors are not weighted
    monkeypatch.setattr(nncf_hqq.activation_moments, "_available_memory", lambda: 0.0)
    short, short_source = compress()
    assert short_source == "none" and same(short, unweighted)
