"""The zero point offset storage: NNCF's INT4 pattern plus per-group offsets added after the MatMul."""

import numpy as np
import openvino as ov
import pytest
from nncf import CompressWeightsMode
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.tensor import Tensor
from openvino import opset13 as opset

from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import HQQZeroPointStorage
from nncf_hqq import compress_weights
from nncf_hqq.cli.report import constants_by_name
from nncf_hqq.cli.report import dequantize
from nncf_hqq.cli.report import layer_reports
from tests.openvino.native.models import bert_mlp_weights
from tests.openvino.native.models import constant_types
from tests.openvino.native.models import constants
from tests.openvino.native.models import heavy_tailed_weight
from tests.openvino.native.models import linear_model
from tests.openvino.native.models import mlp_model
from tests.openvino.native.quantization.hqq_reference import quantization_params

INT4_ASYM = CompressWeightsMode.INT4_ASYM
OFFSET_PARAMS = AdvancedHQQParameters(zero_point_storage=HQQZeroPointStorage.OFFSET)
OFFSET = AdvancedCompressionParameters(hqq_params=OFFSET_PARAMS)
F32_NO_DYNAMIC_QUANTIZATION = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _compress(model: ov.Model, **kwargs) -> ov.Model:
    kwargs.setdefault("mode", INT4_ASYM)
    kwargs.setdefault("group_size", 64)
    kwargs.setdefault("all_layers", True)
    return compress_weights(model, hqq=True, advanced_parameters=OFFSET, **kwargs)


def _ops(model: ov.Model, type_name: str) -> list[ov.Node]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() == type_name]


def _run(model: ov.Model, *inputs: np.ndarray) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(model, "CPU", F32_NO_DYNAMIC_QUANTIZATION)
    result = compiled(list(inputs))
    return [result[output] for output in compiled.outputs]


def _transposed_linear_model(weight_in_out: np.ndarray) -> ov.Model:
    """y = x W with W stored [in, out] (MatMul without transpose_b)."""
    x = opset.parameter([2, 3, weight_in_out.shape[0]], ov.Type.f32, name="x")
    y = opset.matmul(x, opset.constant(weight_in_out, name="w"), False, False, name="w_matmul")
    return ov.Model([opset.result(y, name="y")], [x], "transposed")


def test_offset_storage_keeps_nncf_int4_pattern_with_integer_zero_points():
    model = _compress(linear_model({"w": heavy_tailed_weight((96, 256))}))
    types, values = constant_types(model), constants(model)
    assert types["w"] == ov.Type.u4 and types["w/zero_point"] == ov.Type.u4 and types["w/scale"] == ov.Type.f16
    assert types["w/zero_point_offset"] == ov.Type.f16
    assert values["w/zero_point_offset"].shape == (96, 4)  # one offset per group: [out, in / g]
    assert np.any(values["w/zero_point_offset"] != 0)
    assert len(_ops(model, "ReduceSum")) == 1


@pytest.mark.parametrize("transposed", [False, True], ids=["w_out_in", "w_in_out"])
def test_offset_storage_output_equals_its_dequantized_weights_within_f32_tolerance(transposed):
    weight = heavy_tailed_weight((96, 256), seed=4)
    if transposed:
        model, x = _compress(_transposed_linear_model(weight.T.copy())), np.ones((2, 3, 256), np.float32)
    else:
        model, x = _compress(linear_model({"w": weight})), np.ones((1, 4, 256), np.float32)
    x = x * np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dequantized = dequantize(constants_by_name(model), "w")
    dequantized = dequantized.reshape(256, 96) if transposed else dequantized.reshape(96, 256).T
    expected = x.astype(np.float64) @ dequantized.astype(np.float64)
    (output,) = _run(model, x)
    assert np.abs(output - expected).max() <= 1e-5 * np.abs(expected).max()


def test_offset_storage_equals_the_float_zero_point_reference():
    """The stored weights are s (q - z) for the solver's float zero point z, up to the f16 rounding of the offsets."""
    weight = heavy_tailed_weight((96, 256), seed=6)
    model = _compress(linear_model({"w": weight}))
    config = WeightCompressionConfig(mode=INT4_ASYM, group_size=64)
    scale, zero_point = quantization_params(Tensor(weight), (1,), config, OFFSET_PARAMS)
    assert np.any(zero_point.data != np.round(zero_point.data))  # a float zero point
    grouped = weight.reshape(96, 4, 64)
    q = np.clip(np.round(grouped / scale.data + zero_point.data), 0, 15)
    stored_scale = scale.data.astype(np.float16).astype(np.float32)
    reference = stored_scale * (q - zero_point.data)
    values = constants(model)
    assert np.mean(values["w"] == q) > 0.999  # the codes of the float zero point
    stored = dequantize(constants_by_name(model), "w")
    offsets = np.abs(values["w/zero_point_offset"])[..., None]
    agree = values["w"] == q
    assert np.all(np.abs(stored - reference)[agree] <= np.broadcast_to(offsets * 2**-10 + 1e-7, stored.shape)[agree])


def test_offset_storage_is_at_least_as_accurate_as_integer_zero_points():
    up, _, _ = bert_mlp_weights()
    weights = {"up": up}
    offset_model = _compress(linear_model(weights))
    integer_model = compress_weights(linear_model(weights), mode=INT4_ASYM, group_size=64, all_layers=True, hqq=True)
    reference = linear_model(weights)
    offset_error = layer_reports(offset_model, reference)[0]["relative_error"]
    integer_error = layer_reports(integer_model, reference)[0]["relative_error"]
    assert offset_error < integer_error


def test_matmuls_sharing_an_input_share_one_groupsum():
    up, gate, down = bert_mlp_weights()
    model = _compress(mlp_model(up, gate, down))
    assert len(_ops(model, "ReduceSum")) == 2  # x (up and gate) and the product (down)
    assert {f"{n}/zero_point_offset" for n in ("up", "gate", "down")} <= set(constants(model))


def test_weight_shared_by_two_matmuls_keeps_an_integer_zero_point():
    weight = heavy_tailed_weight((64, 128), seed=2)
    x = opset.parameter([1, 4, 128], ov.Type.f32, name="x")
    const = opset.constant(weight, name="w")
    y1 = opset.matmul(x, const, False, True, name="first")
    y2 = opset.matmul(opset.multiply(x, x), const, False, True, name="second")
    model = _compress(ov.Model([opset.result(y1), opset.result(y2)], [x], "shared"))
    assert constant_types(model)["w/zero_point"] == ov.Type.u4
    assert "w/zero_point_offset" not in constants(model)
    assert not _ops(model, "ReduceSum")


def test_offset_storage_in_int8_asym_mode():
    weight = heavy_tailed_weight((64, 128), seed=9)
    model = _compress(linear_model({"w": weight}), mode=CompressWeightsMode.INT8_ASYM, group_size=None, all_layers=None)
    types = constant_types(model)
    assert types["w"] == ov.Type.u8 and types["w/zero_point"] == ov.Type.u8
    assert constants(model)["w/zero_point_offset"].shape == (64, 1)  # per output channel
    x = np.random.default_rng(3).standard_normal((1, 4, 128)).astype(np.float32)
    expected = x @ dequantize(constants_by_name(model), "w").reshape(64, 128).T
    (output,) = _run(model, x)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
