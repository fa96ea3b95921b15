"""HQQ on unusual weights and bad input: clear errors, exact results where exactness is possible, no lost model."""

import nncf
import numpy as np
import openvino as ov
import pytest
from nncf import CompressWeightsMode
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.quantization.algorithms.weight_compression.weight_lowering import calculate_integer_quantization_params
from nncf.tensor import Tensor
from openvino import opset13 as opset

import nncf_hqq.zero_point_storage
from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedEqualizationParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import EqualizationMethod
from nncf_hqq import compress_weights
from nncf_hqq.hqq import HQQWeightTask
from tests.openvino.native.models import constant_types
from tests.openvino.native.models import constants
from tests.openvino.native.models import decompressed_weight
from tests.openvino.native.models import heavy_tailed_weight
from tests.openvino.native.models import linear_model
from tests.openvino.native.models import relative_error
from tests.openvino.native.quantization.hqq_reference import quantization_params

INT4_ASYM = CompressWeightsMode.INT4_ASYM


def _compress(model: ov.Model, **kwargs) -> ov.Model:
    kwargs.setdefault("mode", INT4_ASYM)
    kwargs.setdefault("group_size", 64)
    kwargs.setdefault("all_layers", True)
    return compress_weights(model, hqq=True, **kwargs)


def _snapshot(model: ov.Model) -> tuple:
    ops = [(op.get_type_name(), op.get_friendly_name()) for op in model.get_ordered_ops()]
    return ops, constants(model), dict(model.get_rt_info())


def _assert_unchanged(model: ov.Model, snapshot: tuple) -> None:
    ops, values, rt_info = _snapshot(model)
    assert ops == snapshot[0]
    assert values.keys() == snapshot[1].keys()
    for name, value in values.items():
        np.testing.assert_array_equal(value, snapshot[1][name])
    assert rt_info.keys() == snapshot[2].keys()


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("mode", "awq"), [(INT4_ASYM, False), (INT4_ASYM, True), (CompressWeightsMode.INT4_SYM, False)]
)
def test_non_finite_weight_raises_naming_the_layer_and_leaves_the_model_untouched(bad_value, mode, awq):
    good, bad = heavy_tailed_weight((64, 128), seed=1), heavy_tailed_weight((64, 128), seed=2)
    bad[3, 7] = bad_value
    model = linear_model({"good": good, "bad": bad})
    snapshot = _snapshot(model)
    with pytest.raises(nncf.ValidationError, match="bad"):
        _compress(model, mode=mode, awq=awq)
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize("mode", [INT4_ASYM, CompressWeightsMode.INT8_ASYM, CompressWeightsMode.INT4_SYM])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_exactly_the_groups_with_non_finite_weights_get_nan_scales(mode, dtype):
    """The solvers mark such groups (so `HQQWeightTask.solve` checks a weight without another pass over it)."""
    weight = heavy_tailed_weight((32, 256)).astype(dtype)
    bad = {(3, 7): np.nan, (5, 70): np.inf, (9, 255): -np.inf, (31, 128): np.nan}
    for index, value in bad.items():
        weight[index] = value
    config = WeightCompressionConfig(mode=mode, group_size=64)
    scale, _ = quantization_params(Tensor(weight), (1,), config)
    expected = np.zeros((32, 4, 1), bool)
    for row, column in bad:
        expected[row, column // 64] = True
    np.testing.assert_array_equal(~np.isfinite(scale.data), expected)


@pytest.mark.parametrize(
    ("storage", "failing_step"), [("int", "solve"), ("offset", "solve"), ("offset", "zero_point_offset")]
)
def test_failure_while_compressing_leaves_the_model_untouched(monkeypatch, storage, failing_step):
    """Weights are solved while NNCF's transform runs: a failure after some weights were replaced undoes them."""
    model = linear_model({f"w{i}": heavy_tailed_weight((64, 128), seed=i) for i in range(3)})
    snapshot = _snapshot(model)
    calls = []
    target = (
        (HQQWeightTask, "solve") if failing_step == "solve" else (nncf_hqq.zero_point_storage, "add_zero_point_offset")
    )
    original = getattr(*target)

    def fail_on_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(*target, fail_on_third_call)
    hqq_params = AdvancedHQQParameters(zero_point_storage=storage)
    with pytest.raises(RuntimeError, match="injected failure"):
        _compress(model, advanced_parameters=AdvancedCompressionParameters(hqq_params=hqq_params))
    assert len(calls) == 3
    _assert_unchanged(model, snapshot)
    monkeypatch.undo()
    compressed = _compress(model, advanced_parameters=AdvancedCompressionParameters(hqq_params=hqq_params))
    assert len(constants(compressed)) > len(snapshot[1])  # the model is still usable


@pytest.mark.parametrize(
    "params",
    [
        AdvancedHQQParameters(num_iterations=-3),
        AdvancedHQQParameters(num_iterations=2.5),
        AdvancedHQQParameters(lp_norm=0.0),
        AdvancedHQQParameters(lp_norm=1.5),
        AdvancedHQQParameters(lp_norm=float("nan")),
        AdvancedHQQParameters(beta=0.0),
        AdvancedHQQParameters(beta=-1.0),
        AdvancedHQQParameters(kappa=0.0),
        AdvancedHQQParameters(scale_search_steps=-1),
        AdvancedHQQParameters(zero_point_storage="int8"),
        AdvancedHQQParameters(lp_norm="0.7"),
        AdvancedHQQParameters(lp_norm=None),
        AdvancedHQQParameters(beta="10"),
        AdvancedHQQParameters(beta=float("inf")),
        AdvancedHQQParameters(kappa=float("inf")),
        AdvancedHQQParameters(clip_extremes="no"),
        AdvancedHQQParameters(norm_importance=1),
        AdvancedHQQParameters(num_iterations=True),
        AdvancedHQQParameters(activation_moments="yes"),
        AdvancedHQQParameters(random_token_windows=0),
        AdvancedHQQParameters(bos_token_id=-1),
        AdvancedEqualizationParameters(method="sinkhorn-knopp"),
        AdvancedEqualizationParameters(method=None),
        AdvancedEqualizationParameters(alpha=0.0),
        AdvancedEqualizationParameters(alpha=1.5),
        AdvancedEqualizationParameters(alpha=float("nan")),
        AdvancedEqualizationParameters(alpha="0.5"),
        AdvancedEqualizationParameters(method="auto", activations="text"),
        AdvancedEqualizationParameters(method="auto", prior_exponent=-1.0),
        AdvancedEqualizationParameters(method="auto", bos_token_id=-1),
        AdvancedEqualizationParameters(method="auto", bos_token_id=True),
    ],
)
def test_invalid_parameters_raise_validation_error_naming_their_class_and_leave_the_model_untouched(params):
    field = "hqq_params" if isinstance(params, AdvancedHQQParameters) else "equalization_params"
    model = linear_model({"w": heavy_tailed_weight((64, 128))})
    snapshot = _snapshot(model)
    with pytest.raises(nncf.ValidationError, match=type(params).__name__):
        _compress(model, advanced_parameters=AdvancedCompressionParameters(**{field: params}))
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize("storage", ["float16", "offset"])
@pytest.mark.parametrize("mode", [CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT8_SYM])
def test_float_zero_point_storage_with_a_symmetric_mode_is_refused_as_in_the_command(storage, mode):
    model = linear_model({"w": heavy_tailed_weight((64, 128))})
    snapshot = _snapshot(model)
    params = AdvancedCompressionParameters(hqq_params=AdvancedHQQParameters(zero_point_storage=storage))
    with pytest.raises(nncf.ValidationError, match="asymmetric"):
        _compress(model, mode=mode, ratio=0.5, advanced_parameters=params)
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize("field", ["hqq_params", "equalization_params"])
def test_parameters_of_another_type_raise_validation_error(field):
    model = linear_model({"w": heavy_tailed_weight((64, 128))})
    with pytest.raises(nncf.ValidationError, match="Parameters"):
        _compress(model, advanced_parameters=AdvancedCompressionParameters(**{field: {"method": "power"}}))


def test_equalization_method_accepts_its_string_values():
    assert AdvancedEqualizationParameters(method="sinkhorn").method == EqualizationMethod.SINKHORN


def test_numpy_scalars_are_valid_parameters():
    AdvancedHQQParameters(lp_norm=np.float32(0.7), beta=np.float64(10.0), num_iterations=np.int64(3)).validate()


def test_zero_point_storage_accepts_its_string_values():
    assert AdvancedHQQParameters(zero_point_storage="float16").zero_point_storage.value == "float16"


@pytest.mark.parametrize(
    "mode", [CompressWeightsMode.NF4, CompressWeightsMode.FP8_E4M3, CompressWeightsMode.MXFP4, CompressWeightsMode.CB4]
)
def test_unsupported_modes_raise_validation_error_naming_the_supported_ones(mode):
    model = linear_model({"w": heavy_tailed_weight((64, 128))})
    with pytest.raises(nncf.ValidationError, match="int4_asym"):
        _compress(model, mode=mode, group_size=32)


def test_hqq_with_gptq_raises_validation_error():
    model = linear_model({"w": heavy_tailed_weight((64, 128))})
    data = nncf.Dataset([np.zeros((1, 4, 128), np.float32)])
    with pytest.raises(nncf.ValidationError, match=r"GPTQ|gptq"):
        _compress(model, gptq=True, dataset=data)


def test_non_openvino_model_raises_unsupported_backend_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(nncf.UnsupportedBackendError, match="OpenVINO"):
        _compress(torch.nn.Linear(128, 64))


@pytest.mark.parametrize("value", [0.0, 0.37, -1.25])
def test_constant_and_zero_groups_are_reconstructed_exactly(value):
    weight = heavy_tailed_weight((16, 256))
    weight[:, :64] = value  # every row: one constant group
    weight[3] = 0.0  # one all-zero row
    model = _compress(linear_model({"w": weight}))
    got = decompressed_weight(model, "w_matmul")
    np.testing.assert_allclose(got[:, :64], weight[:, :64], rtol=1e-3, atol=0)
    np.testing.assert_array_equal(got[3], 0.0)


@pytest.mark.parametrize("magnitude", [1e-30, 1e30])
def test_tiny_and_huge_magnitudes_give_finite_parameters_no_worse_than_rtn(magnitude):
    weight = heavy_tailed_weight((32, 128)) / 0.02 * magnitude
    config = WeightCompressionConfig(mode=INT4_ASYM, group_size=64)
    scale, zero_point = quantization_params(Tensor(weight), (1,), config)
    assert np.all(np.isfinite(scale.data)) and np.all(scale.data > 0)
    assert zero_point.data.min() >= 0 and zero_point.data.max() <= 15
    grouped = weight.reshape(32, 2, 64).astype(np.float64)
    rtn_scale, rtn_zero_point = calculate_integer_quantization_params(Tensor(grouped.astype(np.float32)), (2,), config)

    def error(s, z):
        q = np.clip(np.round(grouped / s + z), 0, 15)
        return np.abs(grouped - s * (q - z)).sum()

    assert error(scale.data, zero_point.data) <= error(rtn_scale.data, rtn_zero_point.data) * (1 + 1e-6)


@pytest.mark.parametrize("dtype", [ov.Type.f32, ov.Type.f16, ov.Type.bf16])
def test_f32_f16_bf16_constants_compress_and_beat_rtn(dtype):
    weights = {"w": heavy_tailed_weight((128, 256))}
    rtn = compress_weights(linear_model(weights, dtype), mode=INT4_ASYM, group_size=64, all_layers=True)
    hqq = _compress(linear_model(weights, dtype))
    assert constant_types(hqq)["w"] == ov.Type.u4
    stored = {"w": constants(linear_model(weights, dtype))["w"]}  # the weight as the model holds it
    assert relative_error(hqq, stored) < relative_error(rtn, stored)


def test_channels_not_divisible_by_group_size_follow_nncf_group_size_fallback():
    weights = {"w": heavy_tailed_weight((64, 96))}  # 96 input channels, group size 64
    with pytest.raises(nncf.InvalidGroupSizeError):
        _compress(linear_model(weights))
    ignored = _compress(
        linear_model(weights),
        advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.IGNORE),
    )
    assert constant_types(ignored)["w"] == ov.Type.f32
    adjusted = _compress(
        linear_model(weights),
        advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
    )
    assert constant_types(adjusted)["w"] == ov.Type.u4
    assert constants(adjusted)["w/scale"].shape == (64, 3, 1)  # group size adjusted to 32


def test_3d_weights_are_compressed_per_batch_and_group():
    weight = heavy_tailed_weight((4, 64, 128))  # [experts, out, in]
    x = opset.parameter([4, 3, 128], ov.Type.f32, name="x")
    matmul = opset.matmul(x, opset.constant(weight, name="w"), False, True, name="w_matmul")
    model = _compress(ov.Model([opset.result(matmul)], [x]))
    assert constant_types(model)["w"] == ov.Type.u4
    assert constants(model)["w/scale"].shape == (4, 64, 2, 1)
    got = decompressed_weight(model, "w_matmul").reshape(weight.shape)
    assert np.linalg.norm(got - weight) / np.linalg.norm(weight) < 0.15


def _weight_input(model: ov.Model, matmul_name: str) -> ov.Node:
    """The node producing the weight input of a MatMul, through Converts."""
    (matmul,) = [op for op in model.get_ordered_ops() if op.get_friendly_name() == matmul_name]
    node = matmul.input_value(1).get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node


def test_shared_constant_is_compressed_once_and_feeds_both_matmuls():
    weight = heavy_tailed_weight((64, 128))
    x = opset.parameter([1, 4, 128], ov.Type.f32, name="x")
    const = opset.constant(weight, name="shared")
    first = opset.matmul(x, const, False, True, name="first")
    second = opset.matmul(opset.relu(x), const, False, True, name="second")
    model = _compress(ov.Model([opset.result(first), opset.result(second)], [x]))
    codes = [op for op in model.get_ordered_ops() if op.get_friendly_name() == "shared"]
    scales = [op for op in model.get_ordered_ops() if op.get_friendly_name() == "shared/scale"]
    assert len(codes) == len(scales) == 1 and codes[0].get_element_type() == ov.Type.u4
    weights = {name: _weight_input(model, name) for name in ("first", "second")}
    assert weights["first"].get_friendly_name() == weights["second"].get_friendly_name()  # one subgraph, read twice
