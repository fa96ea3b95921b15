"""
Every family optimum-intel exports (`tests.openvino.native.families`): `nncf-hqq compress` exports and compresses
it, equalization keeps its float function, and compression runs with NNCF's options.
"""

import re
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import pytest
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode

from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import cli
from nncf_hqq import compress_weights
from nncf_hqq.equalization import EqualizationRule
from nncf_hqq.equalization.patterns import find_scale_groups
from tests.openvino.native.families import FAMILIES
from tests.openvino.native.families import save_tiny_model
from tests.openvino.native.models import fold_equalization

pytestmark = pytest.mark.slow  # 19 families exported with optimum-intel

F32 = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
TOKENS = np.random.default_rng(0).integers(3, 250, size=(1, 12))
F16_EPS = 2.0**-10
FIRST_LAYER = [".*layers\\.0\\..*", ".*\\.h\\.0\\..*"]  # names of the first decoder layer's nodes
COMPRESSIONS = {
    "ratio-0.5": dict(ratio=0.5),
    "ignored-scope": dict(ignored_scope=nncf.IgnoredScope(patterns=FIRST_LAYER, validate=False)),
    "awq": dict(awq=True),
    "int4-sym": dict(mode=nncf.CompressWeightsMode.INT4_SYM),
    "int8": dict(mode=nncf.CompressWeightsMode.INT8_ASYM, group_size=None),
}  # fmt: skip


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(family, its f16 IR as the command exported it, the command's output directory)."""
    root = tmp_path_factory.mktemp(request.param)
    hf_dir = save_tiny_model(request.param, root / "hf")
    dst, cache = root / "int4", root / "cache"
    args = ["compress", "--src", str(hf_dir), "--dst", str(dst), "--group-size", "32", "--cache-dir", str(cache)]
    assert cli.main(args) == 0
    (ir,) = cache.glob("*/openvino_model.xml")
    return request.param, ir, dst


def _logits(model: ov.Model) -> np.ndarray:
    values = {"input_ids": TOKENS, "attention_mask": np.ones_like(TOKENS), "beam_idx": np.zeros(1, np.int32),
              "position_ids": np.arange(TOKENS.shape[1])[None]}  # fmt: skip
    inputs = {port.get_any_name(): values[port.get_any_name()] for port in model.inputs}
    return ov.Core().compile_model(model, "CPU", F32).create_infer_request().infer(inputs)[0].copy()


def _integer_weights(model: ov.Model) -> dict[str, ov.Type]:
    integer = (ov.Type.u4, ov.Type.i4, ov.Type.u8, ov.Type.i8)
    return {
        op.get_friendly_name(): op.get_element_type()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() in integer and op.get_output_size() == 1
        and len(op.get_output_shape(0)) >= 2
    }  # fmt: skip


def _matmuls(ir: Path) -> list[str]:
    return [
        op.get_friendly_name() for op in ov.Core().read_model(ir).get_ordered_ops() if op.get_type_name() == "MatMul"
    ]


def test_family_exports_and_equalization_keeps_its_float_function(exported):
    family, ir, dst = exported
    assert (dst / "openvino_model.xml").is_file()
    compressed = ov.Core().read_model(dst / "openvino_model.xml")
    assert compressed.get_rt_info(["nncf", "weight_compression", "hqq", "enabled"]).astype(str) == "True"
    equalized = int(compressed.get_rt_info(["nncf", "weight_compression", "hqq", "equalized_groups"]).astype(str))
    assert equalized >= 1
    reference = _logits(ov.Core().read_model(ir))
    for method in ("power", "sinkhorn", "auto"):  # auto with activations measured on random tokens
        model = ov.Core().read_model(ir)
        groups = find_scale_groups(model)
        plan = fold_equalization(model, EqualizationRule(method, activations="random_tokens"), group_size=32)
        # every family has a norm (or, olmo's non-parametric norms aside, an MLP or attention) group to equalize
        kept = list(plan.chosen.values()).count("none")
        assert groups and len(plan.equalized) + kept == len(groups) and not plan.skipped, (family, method)
        got = _logits(model)
        # f16 constants are rounded again once scaled: a few units of f16 rounding, relative to the largest logit
        assert np.abs(got - reference).max() <= 4 * F16_EPS * np.abs(reference).max(), (family, method)


@pytest.mark.parametrize("options", list(COMPRESSIONS))
def test_family_compresses_with_nncf_options(exported, options):
    family, ir, _ = exported
    reference = _logits(ov.Core().read_model(ir))
    # Cohere's rotary embedding is a MatMul with one input channel: NNCF needs a group size fallback for it
    adjust = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
    kwargs = {"mode": nncf.CompressWeightsMode.INT4_ASYM, "group_size": 32, "advanced_parameters": adjust,
              **COMPRESSIONS[options]}  # fmt: skip
    model = compress_weights(ov.Core().read_model(ir), hqq=True, **kwargs)
    weights = _integer_weights(model)
    precisions = set(weights.values())
    expected = {ov.Type.u8} if options == "int8" else {ov.Type.u4 if options != "int4-sym" else ov.Type.i4}
    assert expected <= precisions, (family, precisions)
    if options == "ignored-scope":  # the first layer's MatMuls keep their float weights
        first_layer = [name for name in _matmuls(ir) if any(re.fullmatch(p, name) for p in FIRST_LAYER)]
        plain = compress_weights(ov.Core().read_model(ir), hqq=True, mode=kwargs["mode"], group_size=32,
                                 advanced_parameters=adjust)  # fmt: skip
        assert first_layer and len(weights) < len(_integer_weights(plain)), family
    logits = _logits(model)
    assert np.isfinite(logits).all()
    # a working compressed model still ranks the vocabulary as the float one does, broadly
    correlation = np.corrcoef(logits.ravel(), reference.ravel())[0, 1]
    assert correlation > 0.9, (family, options, correlation)
