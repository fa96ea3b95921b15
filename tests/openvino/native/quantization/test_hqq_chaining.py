"""HQQ combined with NNCF's other weight-compression options: AWQ, scale estimation, LoRA correction, ratio."""

import nncf
import numpy as np
import openvino as ov
import pytest
from nncf import CompressWeightsMode

from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import compress_weights
from tests.openvino.native.models import bert_mlp_weights
from tests.openvino.native.models import constant_types
from tests.openvino.native.models import constants
from tests.openvino.native.models import decompressed_weight
from tests.openvino.native.models import mlp_model

INT4_ASYM = CompressWeightsMode.INT4_ASYM


def _dataset(n: int = 4, hidden: int = 384) -> nncf.Dataset:
    rng = np.random.default_rng(0)
    return nncf.Dataset([rng.standard_normal((1, 4, hidden)).astype(np.float32) for _ in range(n)])


def _output(model: ov.Model, x: np.ndarray) -> np.ndarray:
    config = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    return ov.Core().compile_model(model, "CPU", config)([x])[0]


def _mlp(**kwargs) -> ov.Model:
    return compress_weights(mlp_model(*bert_mlp_weights()), mode=INT4_ASYM, group_size=64, **kwargs)


def test_data_free_awq_runs_before_hqq_and_hqq_sees_scaled_weights():
    up, gate, down = bert_mlp_weights()
    hqq = _mlp(all_layers=True, hqq=True)
    awq_rtn, awq_hqq = _mlp(all_layers=True, awq=True), _mlp(all_layers=True, awq=True, hqq=True)
    # AWQ changed the weights (it scales the input channels of `down`, the inverse merged into `up`) before HQQ
    assert not np.array_equal(constants(hqq)["down/scale"], constants(awq_hqq)["down/scale"])
    # HQQ's parameters differ from RTN's on the same AWQ-scaled weights, and the model still computes the MLP
    assert not np.array_equal(constants(awq_rtn)["down/scale"], constants(awq_hqq)["down/scale"])
    x = next(iter(_dataset(1).get_data()))
    reference = _output(mlp_model(up, gate, down), x)
    assert np.linalg.norm(_output(awq_hqq, x) - reference) / np.linalg.norm(reference) < 0.2
    assert awq_hqq.get_rt_info(["nncf", "weight_compression", "awq"]).astype(str) == "True"
    assert awq_hqq.get_rt_info(["nncf", "weight_compression", "hqq", "enabled"]).astype(str) == "True"


def test_data_aware_awq_with_hqq_compiles_and_tracks_the_float_model():
    x = _dataset(1).get_data()
    reference = _output(mlp_model(*bert_mlp_weights()), next(iter(x)))
    model = _mlp(awq=True, dataset=_dataset(), hqq=True)
    got = _output(model, next(iter(x)))
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 0.2


def test_hqq_keeps_scale_estimation_parameters_by_default():
    """Refining them was measured to raise perplexity (benchmarks/RESULTS.md): SE's 4-bit layers stay SE's."""
    data = _dataset(8)
    se = constants(_mlp(scale_estimation=True, dataset=data))
    se_hqq = constants(_mlp(scale_estimation=True, dataset=data, hqq=True))
    se_types = constant_types(_mlp(scale_estimation=True, dataset=data, hqq=True))
    for name in ("up", "gate"):  # 4-bit layers scale estimation handled
        np.testing.assert_array_equal(se[f"{name}/scale"], se_hqq[f"{name}/scale"])
        np.testing.assert_array_equal(se[name], se_hqq[name])
        np.testing.assert_array_equal(se[f"{name}/zero_point"], se_hqq[f"{name}/zero_point"])
        assert se_types[f"{name}/zero_point"] == ov.Type.u4  # NNCF's format, as without HQQ
    assert not np.array_equal(se["down/scale"], se_hqq["down/scale"])  # INT8 backup layer: HQQ's


def test_hqq_refines_scale_estimation_on_request_and_keeps_its_output_error():
    """With refine_scale_estimation, HQQ starts from SE's scales; the layer output error stays within 5% of SE."""
    up = bert_mlp_weights()[0]
    data = _dataset(8)
    x = np.concatenate(list(data.get_data()), axis=1)[0]  # [tokens, hidden]
    se = _mlp(scale_estimation=True, dataset=data)
    refine = AdvancedCompressionParameters(hqq_params=AdvancedHQQParameters(refine_scale_estimation=True))
    se_hqq = _mlp(scale_estimation=True, dataset=data, hqq=True, advanced_parameters=refine)
    assert not np.array_equal(constants(se)["up/scale"], constants(se_hqq)["up/scale"])
    out_error = lambda model: np.linalg.norm(x @ (decompressed_weight(model, "up_matmul") - up).T)
    assert out_error(se_hqq) < 1.05 * out_error(se)


def test_lora_correction_adds_adapters_to_hqq_weights_and_lowers_their_output_error():
    data = _dataset()
    model = _mlp(lora_correction=True, dataset=data, hqq=True)
    matmul_names = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    assert len(matmul_names) > 3, "no LoRA adapters were inserted"
    hqq, rtn_lora = _mlp(hqq=True), _mlp(lora_correction=True, dataset=data)
    assert not np.array_equal(constants(model)["up/scale"], constants(rtn_lora)["up/scale"])  # HQQ's parameters
    float_model = mlp_model(*bert_mlp_weights())

    def error(compressed: ov.Model) -> float:
        return sum(np.linalg.norm(_output(compressed, x) - _output(float_model, x)) for x in data.get_data())

    assert error(model) < error(hqq)  # the adapters correct HQQ's error on the data they were fitted to


def test_ratio_and_backup_mode_give_int8_backup_layers_hqq_parameters():
    hqq, rtn = _mlp(ratio=0.7, hqq=True), _mlp(ratio=0.7)
    backup = lambda model: [name for name in ("up", "gate", "down") if constant_types(model)[name] == ov.Type.u8]
    assert backup(hqq) == backup(rtn) and 0 < len(backup(hqq)) < 3
    hqq_constants, rtn_constants = constants(hqq), constants(rtn)
    for name in backup(hqq):  # the INT8 backup layers have HQQ's scales, not RTN's
        assert np.any(hqq_constants[f"{name}/scale"] != rtn_constants[f"{name}/scale"]), name


@pytest.mark.parametrize("backup_mode", [nncf.BackupMode.NONE, nncf.BackupMode.INT8_SYM])
def test_backup_modes_keep_the_backup_layers_as_nncf_does_with_hqq_parameters(backup_mode):
    hqq, rtn = _mlp(ratio=0.7, backup_mode=backup_mode, hqq=True), _mlp(ratio=0.7, backup_mode=backup_mode)
    types = {name: constant_types(hqq)[name] for name in ("up", "gate", "down")}
    assert types == {name: constant_types(rtn)[name] for name in types}
    backup = ov.Type.f32 if backup_mode == nncf.BackupMode.NONE else ov.Type.i8
    assert types["up"] == ov.Type.u4 and types["gate"] == types["down"] == backup
    if backup_mode == nncf.BackupMode.INT8_SYM:  # the INT8_SYM backup layers have HQQ's scales, not RTN's
        assert not np.array_equal(constants(hqq)["gate/scale"], constants(rtn)["gate/scale"])
        assert "gate/zero_point" not in constants(hqq)


def test_ignored_scope_is_respected():
    ignored = nncf.IgnoredScope(names=["down_matmul"])
    model = _mlp(ignored_scope=ignored, hqq=True)
    types = constant_types(model)
    assert types["down"] == ov.Type.f32
    assert types["up"] == ov.Type.u4
    # the ignored weight is left exactly as given (not equalized either), the others are HQQ's, not RTN's
    np.testing.assert_array_equal(constants(model)["down"], bert_mlp_weights()[2])
    rtn = _mlp(ignored_scope=ignored)
    assert not np.array_equal(constants(model)["up/scale"], constants(rtn)["up/scale"])


def test_data_aware_mixed_precision_uses_the_given_sensitivity_metric():
    metric = nncf.SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE
    model = _mlp(ratio=0.7, dataset=_dataset(), sensitivity_metric=metric, hqq=True)
    assert model.get_rt_info(["nncf", "weight_compression", "sensitivity_metric"]).astype(str) == metric.value
    types = [constant_types(model)[name] for name in ("up", "gate", "down")]
    assert ov.Type.u4 in types and ov.Type.u8 in types
