"""Data-free equalization: the float function is kept, the compressed graph is RTN's, and it chains with NNCF."""

import dataclasses
import logging
import re
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import pytest
from nncf.common.logging import nncf_logger
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode
from nncf.tensor import Tensor
from openvino import opset13 as opset

import nncf_hqq.compress
from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedEqualizationParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import compress_weights
from nncf_hqq.cli.report import layer_reports
from nncf_hqq.compress import compress_weights_and_plan
from nncf_hqq.equalization import EqualizationPlan
from nncf_hqq.equalization import EqualizationRule
from nncf_hqq.equalization import algorithm
from nncf_hqq.equalization.patterns import ProducerKind
from nncf_hqq.equalization.patterns import find_scale_groups
from nncf_hqq.equalization.scales import MAX_SCALE
from nncf_hqq.equalization.scales import power_scales
from nncf_hqq.equalization.scales import sinkhorn_scales
from tests.openvino.native.models import constants
from tests.openvino.native.models import fold_equalization
from tests.openvino.native.models import fold_plan
from tests.openvino.native.models import heavy_tailed_weight

LAYERS = 2
F32 = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
TOKENS = np.random.default_rng(0).integers(3, 250, size=(1, 12))


def _small_config(family: str):
    """Two decoder layers, 4 query heads sharing 2 key/value heads, hidden 64, MLP 96."""
    sizes = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=LAYERS, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    if family == "llama":
        from transformers import LlamaConfig
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**sizes))
    if family == "qwen":  # q/k/v with biases
        from transformers import Qwen2Config
        from transformers import Qwen2ForCausalLM

        return Qwen2ForCausalLM(Qwen2Config(**sizes))
    from transformers import Gemma3ForCausalLM  # norms scale by 1 + w, gated GELU
    from transformers import Gemma3TextConfig

    return Gemma3ForCausalLM(Gemma3TextConfig(**sizes, head_dim=16, sliding_window=64))


def _randomize_norms(model) -> None:
    """Norm scales away from 1, as trained ones are (random init leaves them at 1 or 0)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    for name, parameter in model.named_parameters():
        if "norm" in name:
            parameter.data = torch.rand(parameter.shape, generator=generator) * 1.5 + 0.25


@pytest.fixture(scope="module")
def exported_lms(tmp_path_factory) -> dict[str, Path]:
    """The small LMs exported so far, by family: each exported once for the module's fixtures."""
    return {}


def _export_small_lm(family: str, out_dir: Path) -> Path:
    """
    The IR file of a small causal LM with f32 weights: optimum-intel's stateful export for Llama and Qwen,
    torch.export for Gemma (optimum-intel 2.2 does not export Gemma 3 with this transformers).
    """
    import torch

    torch.manual_seed(0)
    model = _small_config(family).eval()
    _randomize_norms(model)
    if family == "gemma":
        model.config.use_cache = False

        class Logits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                return self.model(input_ids=input_ids, use_cache=False).logits

        example = (torch.from_numpy(TOKENS),)
        tokens = torch.export.Dim("tokens", min=2, max=64)
        with torch.no_grad():
            program = torch.export.export(Logits(), example, dynamic_shapes={"input_ids": {1: tokens}})
        ov.save_model(ov.convert_model(program), out_dir / "openvino_model.xml", compress_to_fp16=False)
    else:
        from optimum.exporters.openvino import main_export
        from optimum.intel import OVConfig

        model.save_pretrained(out_dir / "hf")
        main_export(str(out_dir / "hf"), output=str(out_dir), task="text-generation-with-past",
                    ov_config=OVConfig(dtype="fp32"), convert_tokenizer=False)  # fmt: skip
    return out_dir / "openvino_model.xml"


def _small_lm(family: str, exported: dict, tmp_path_factory) -> tuple[str, Path]:
    if family not in exported:
        exported[family] = _export_small_lm(family, tmp_path_factory.mktemp(family))
    return family, exported[family]


@pytest.fixture(scope="module", params=["llama", "qwen", "gemma"])
def small_lm(request, exported_lms, tmp_path_factory) -> tuple[str, Path]:
    """(family, IR file) of a small LM of each family."""
    return _small_lm(request.param, exported_lms, tmp_path_factory)


@pytest.fixture(scope="module", params=["llama", "qwen"])
def stateful_lm(request, exported_lms, tmp_path_factory) -> tuple[str, Path]:
    """
    (family, IR file) of the small LMs optimum-intel exports with a KV cache and whose MLP NNCF's AWQ recognises
    (Gemma's torch.export graph has neither).
    """
    return _small_lm(request.param, exported_lms, tmp_path_factory)


def _logits(model: ov.Model) -> np.ndarray:
    inputs = {}
    for port in model.inputs:
        name = port.get_any_name()
        inputs[name] = {
            "input_ids": TOKENS,
            "attention_mask": np.ones_like(TOKENS),
            "position_ids": np.arange(TOKENS.shape[1])[None],
            "beam_idx": np.zeros(1, np.int32),
        }[name]
    request = ov.Core().compile_model(model, "CPU", F32).create_infer_request()
    return request.infer(inputs)[0].copy()


@pytest.mark.parametrize("method", ["power", "sinkhorn", "auto", "auto-weights"])
def test_equalization_alone_keeps_the_float_model_output(small_lm, method):
    _, ir = small_lm
    model = ov.Core().read_model(ir)
    reference = _logits(model)
    activations = "weights" if method == "auto-weights" else "random_tokens"
    plan = fold_equalization(model, EqualizationRule(method.split("-")[0], activations=activations), group_size=32)
    kinds = [g.kind for g in find_scale_groups(ov.Core().read_model(ir))]
    assert kinds.count(ProducerKind.ATTENTION) == LAYERS and kinds.count(ProducerKind.GATED) == LAYERS
    assert kinds.count(ProducerKind.NORM) >= 2 * LAYERS  # q/k/v and gate/up (and an untied lm_head)
    kept = list(plan.chosen.values()).count("none")  # auto leaves some groups as they are
    assert len(plan.equalized) + kept == len(kinds) and not plan.skipped and len(plan.equalized) > 0
    assert any(np.any(np.abs(np.log(v)) > 0.05) for axes in plan.factors.values() for v in axes.values())
    got = _logits(model)
    np.testing.assert_allclose(got, reference, rtol=0, atol=2e-4 * np.abs(reference).max())


def test_power_scales_from_one_pass_over_the_weights_are_those_of_their_columns(small_lm, monkeypatch):
    """
    The compiled statistic (sums of |W| per input channel, weighted by the factors planned so far, over each weight
    as stored) gives every group the factors of the readable path (the consumers' columns in float32, then
    `power_scales`) up to float rounding.
    """
    _, ir = small_lm
    statistics = []
    one_pass = algorithm._mean_abs_by_channel
    monkeypatch.setattr(
        algorithm, "_mean_abs_by_channel", lambda *args: statistics.append(one_pass(*args)) or statistics[-1]
    )
    fast = fold_equalization(ov.Core().read_model(ir), EqualizationRule("power"), group_size=32)
    assert len(statistics) == len(fast.equalized) and all(s is not None for s in statistics)
    monkeypatch.setattr(algorithm, "_mean_abs_by_channel", lambda *args: None)
    readable = fold_equalization(ov.Core().read_model(ir), EqualizationRule("power"), group_size=32)
    assert fast.factors.keys() == readable.factors.keys()
    for name, axes in readable.factors.items():
        assert fast.factors[name].keys() == axes.keys()
        for axis, vector in axes.items():
            np.testing.assert_allclose(fast.factors[name][axis], vector, rtol=1e-5)


def test_scales_are_normalised_bounded_and_balance_the_weights():
    rng = np.random.default_rng(0)
    columns = rng.standard_normal((256, 128)).astype(np.float32) * np.exp(rng.standard_normal(128) * 2)
    power, sinkhorn = power_scales(Tensor(columns), 0.5).data, sinkhorn_scales(Tensor(columns), 64).data
    assert np.isclose(np.exp(np.mean(np.log(np.clip(power, 1 / MAX_SCALE, MAX_SCALE)))), 1.0, atol=0.05)
    assert np.isclose(np.median(sinkhorn), 1.0)  # SINQ's normalisation
    for c in (power, sinkhorn):
        assert c.min() >= 1 / MAX_SCALE and c.max() <= MAX_SCALE
        before = columns.std(axis=0)
        after = (columns / c).std(axis=0)
        assert after.max() / after.min() < before.max() / before.min()


def _tile_imbalance(matrix: np.ndarray, group: int) -> np.ndarray:
    """Per tile of `group` columns: max / min of the row and column deviations after the best row scaling."""
    tiles = matrix.reshape(matrix.shape[0], -1, group).transpose(1, 0, 2)
    tiles = tiles / tiles.std(axis=2, keepdims=True)  # rows do not change a grouped quantization: balance them
    cols = tiles.std(axis=1)
    return cols.max(axis=1) / cols.min(axis=1)


def test_sinkhorn_lowers_the_imbalance_it_targets_as_sinqs_reference_rule_does():
    from benchmarks.presinq import presinq_scales  # the reference rule, written apart from the library's

    rng = np.random.default_rng(3)
    # planted: columns and rows of very unequal spread, as in trained weights
    columns = (
        rng.standard_normal((192, 256))
        * 0.02
        * np.exp(rng.standard_normal(256))
        * np.exp(0.5 * rng.standard_normal((192, 1)))
    )
    columns = columns.astype(np.float32)
    c = sinkhorn_scales(Tensor(columns), 64).data
    before, after = _tile_imbalance(columns, 64), _tile_imbalance(columns / c, 64)
    assert np.all(after < 0.5 * before), (before, after)
    np.testing.assert_allclose(c, presinq_scales(columns, 64), rtol=0.01)  # Bessel's correction apart
    assert np.isclose(np.median(c), 1.0)


def test_rtn_output_error_kernel_equals_a_numpy_round_to_nearest():
    from benchmarks.experiments.equalization_criterion import rtn_error
    from nncf_hqq.equalization._kernel import rtn_output_errors

    rng = np.random.default_rng(4)
    weight = (rng.standard_normal((48, 192)) * 0.02).astype(np.float32)
    candidates = np.exp(0.4 * rng.standard_normal((3, 96))).astype(np.float32)
    channel_map = np.tile(np.arange(96), 2)  # two columns read each channel (grouped-query attention's o_proj)
    prior = np.exp(rng.standard_normal(96)).astype(np.float32)
    for symmetric in (False, True):
        got = rtn_output_errors(weight, channel_map, candidates, prior[channel_map], 64, symmetric)
        expected = [rtn_error(weight, c[channel_map], prior[channel_map], 64, symmetric) for c in candidates]
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_auto_keeps_per_group_the_candidate_of_least_estimated_error(small_lm, monkeypatch):
    from nncf_hqq.equalization import _kernel

    _, ir = small_lm
    errors = []
    kernel = _kernel.rtn_output_errors
    monkeypatch.setattr(_kernel, "rtn_output_errors", lambda *args: errors.append(kernel(*args)) or errors[-1])
    plan = fold_equalization(ov.Core().read_model(ir), EqualizationRule("auto"), group_size=32)
    groups = find_scale_groups(ov.Core().read_model(ir))
    assert set(plan.chosen) == {g.name for g in groups}
    # the consumers' errors add up per group, in the plan's order (sinkhorn, power, none)
    totals, index = [], 0
    for group in sorted(groups, key=lambda g: g.kind == ProducerKind.NORM):
        totals.append(sum(errors[index : index + len(group.consumers)]))
        index += len(group.consumers)
    assert index == len(errors)
    picks = [("sinkhorn", "power", "none")[int(np.argmin(t))] for t in totals]
    ordered = sorted(groups, key=lambda g: g.kind == ProducerKind.NORM)
    assert picks == [plan.chosen[g.name] for g in ordered]
    assert {name for name in plan.chosen if plan.chosen[name] != "none"} == set(plan.equalized)


def _token_lm(vocabulary: int = 97, hidden: int = 128, seed: int = 5) -> tuple[ov.Model, dict[str, np.ndarray]]:
    """
    A language model of token ids whose norm-fed group sees x = embedding[ids] * gamma: q and k read x, their sum
    goes to the vocabulary. An embedding column carries outliers (as a residual stream's massive channel).
    """
    rng = np.random.default_rng(seed)
    values = {
        "embedding": (rng.standard_normal((vocabulary, hidden)) * np.exp(rng.standard_normal(hidden))).astype(
            np.float32
        ),
        "gamma": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
        "q": heavy_tailed_weight((hidden, hidden), 1), "k": heavy_tailed_weight((hidden, hidden), 2),
        "head": heavy_tailed_weight((vocabulary, hidden), 3),
    }  # fmt: skip
    values["embedding"][:, 7] *= 50.0
    ids = opset.parameter([1, -1], ov.Type.i64, name="input_ids")
    x = opset.gather(opset.constant(values["embedding"], name="embedding"), ids, 0)
    x = opset.multiply(x, opset.constant(values["gamma"], name="gamma"))
    q = opset.matmul(x, opset.constant(values["q"], name="q"), False, True)
    k = opset.matmul(x, opset.constant(values["k"], name="k"), False, True)
    logits = opset.matmul(opset.add(q, k), opset.constant(values["head"], name="head"), False, True)
    return ov.Model([logits], [ids], "token_lm"), values


def test_random_token_second_moments_equal_a_direct_computation():
    from nncf_hqq.equalization.statistics import input_second_moments
    from nncf_hqq.equalization.statistics import random_token_batches

    model, values = _token_lm()
    (group,) = [g for g in find_scale_groups(model) if g.kind == ProducerKind.NORM]
    moments = input_second_moments(model, [group], windows=3, length=16, seed=2, bos_token_id=1)
    ids = np.concatenate([b["input_ids"] for b in random_token_batches(model, 3, 16, 2, 1)])
    assert ids.shape == (3, 16) and np.all(ids[:, 0] == 1)
    x = values["embedding"][ids.ravel()].astype(np.float64) * values["gamma"]
    np.testing.assert_allclose(moments[group.name], (x * x).mean(axis=0), rtol=1e-5)
    # a model that does not take token ids has none
    features = opset.parameter([2, 4], name="features")
    assert input_second_moments(ov.Model([opset.relu(features)], [features]), [group]) is None


def test_auto_weighs_each_column_by_its_measured_second_moment(monkeypatch):
    from nncf_hqq.equalization import _kernel
    from nncf_hqq.equalization.statistics import input_second_moments

    model, _ = _token_lm()
    calls = []
    kernel = _kernel.rtn_output_errors
    monkeypatch.setattr(_kernel, "rtn_output_errors", lambda *args: calls.append(args) or kernel(*args))
    rule = EqualizationRule("auto", activations="random_tokens", bos_token_id=1)
    plan = fold_equalization(model, rule, group_size=32)
    fresh, _ = _token_lm()
    (group,) = [g for g in find_scale_groups(fresh) if g.kind == ProducerKind.NORM]
    moments = input_second_moments(fresh, [group], bos_token_id=1)[group.name]
    assert len(calls) == 2  # q and k
    for args in calls:
        np.testing.assert_array_equal(args[3], moments)  # column weights: the measured moments
    errors = sum(kernel(*args) for args in calls)
    (chosen,) = plan.chosen.values()  # the one group (its auto-generated name differs between the two models)
    assert chosen == ("sinkhorn", "power", "none")[int(np.argmin(errors))]
    # estimated from the weights instead, the choice weighs columns by the prior
    calls.clear()
    fold_equalization(_token_lm()[0], EqualizationRule("auto", activations="weights"), group_size=32)
    assert not np.array_equal(calls[0][3], moments)


def test_auto_gives_power_scales_to_a_model_it_cannot_run_on_tokens():
    def features_model() -> ov.Model:  # a norm-fed pair of MatMuls on float features: no token ids
        x = opset.parameter([1, 4, 128], ov.Type.f32, name="features")
        normed = opset.multiply(x, opset.constant(np.linspace(0.5, 1.5, 128, dtype=np.float32), name="gamma"))
        q = opset.matmul(normed, opset.constant(heavy_tailed_weight((64, 128), 1), name="q"), False, True)
        k = opset.matmul(normed, opset.constant(heavy_tailed_weight((64, 128), 2), name="k"), False, True)
        return ov.Model([opset.add(q, k)], [x], "features")

    power = fold_equalization(features_model(), EqualizationRule("power"), group_size=64)
    auto = fold_equalization(features_model(), EqualizationRule("auto"), group_size=64)
    assert len(power.equalized) == 1 and len(auto.equalized) == 1 and not auto.chosen
    for name, axes in power.factors.items():
        for axis, vector in axes.items():
            np.testing.assert_array_equal(auto.factors[name][axis], vector)


def _compress(ir: Path | ov.Model, **kwargs) -> ov.Model:
    return _compress_and_plan(ir, **kwargs)[0]


def _compress_and_plan(ir: Path | ov.Model, **kwargs) -> tuple[ov.Model, EqualizationPlan | None]:
    hqq_params = dict(kwargs.pop("hqq_params", {}))
    equalization = AdvancedEqualizationParameters(method=hqq_params.pop("equalization", "power"))
    hqq_params = AdvancedHQQParameters(**hqq_params)
    kwargs.setdefault("mode", nncf.CompressWeightsMode.INT4_ASYM)
    kwargs.setdefault("group_size", 32)
    # the torch.export graph of Gemma has a MatMul with a [1, 128, 1] constant (rotary embedding): one group
    fallback = GroupSizeFallbackMode.ADJUST
    advanced = AdvancedCompressionParameters(
        hqq_params=hqq_params, equalization_params=equalization, group_size_fallback_mode=fallback
    )
    model = ov.Core().read_model(ir) if isinstance(ir, Path) else ir
    return compress_weights_and_plan(model, hqq=True, advanced_parameters=advanced, **kwargs)


def _op_types(model: ov.Model) -> list[str]:
    return sorted(op.get_type_name() for op in model.get_ordered_ops())


def test_equalized_model_has_the_ops_of_an_rtn_model_and_records_the_groups(small_lm):
    _, ir = small_lm
    plain = _compress(ir, hqq_params={"equalization": "none"})
    equalized = _compress(ir, hqq_params={"equalization": "power"})
    assert _op_types(equalized) == _op_types(plain)
    groups = len(find_scale_groups(ov.Core().read_model(ir)))
    info = lambda key: equalized.get_rt_info(["nncf", "weight_compression", "hqq", key]).astype(str)
    assert info("equalization") == "power" and int(info("equalized_groups")) >= 4 * LAYERS
    # the output layer is compressed to INT8 per channel by NNCF: its group (final norm -> lm_head) is skipped
    assert int(info("equalized_groups")) + int(info("equalization_skipped_groups")) == groups
    reference = _logits(ov.Core().read_model(ir))
    for model in (plain, equalized):
        assert np.all(np.isfinite(_logits(model)))
    # the equalized model is a working compression of the float one
    error = np.abs(_logits(equalized) - reference).mean() / np.abs(reference).mean()
    assert error < 0.3


def test_layer_report_measures_the_weights_the_equalized_model_applies(small_lm):
    _, ir = small_lm
    # input channels of unequal magnitudes, so that the equalization factors are far from 1
    reference = ov.Core().read_model(ir)
    spread = EqualizationPlan()
    rng = np.random.default_rng(0)
    for group in find_scale_groups(reference):
        for consumer in group.consumers:
            size = consumer.node.get_output_shape(0)[consumer.axis]
            spread.multiply(consumer.node.get_friendly_name(), consumer.axis, np.exp(rng.standard_normal(size)))
    fold_plan(reference, spread)
    plain = layer_reports(_compress(reference.clone(), hqq_params={"equalization": "none"}), reference)
    equalized, plan = _compress_and_plan(reference.clone(), hqq_params={"equalization": "power"})
    assert plan is not None and plan.factors
    effective = layer_reports(equalized, reference, plan)
    assert [layer["name"] for layer in effective] == [layer["name"] for layer in plain]
    errors = np.array([[a["relative_error"], b["relative_error"]] for a, b in zip(plain, effective, strict=True)])
    assert np.all(errors[:, 1] < 2 * errors[:, 0]) and 0.5 < errors[:, 1].mean() / errors[:, 0].mean() < 1.5
    # compared as stored, the equalized weights would be off by their factors
    stored = np.mean([layer["relative_error"] for layer in layer_reports(equalized, reference)])
    assert stored > 2 * errors[:, 1].mean()


def test_mixed_precision_ranks_the_given_weights_and_only_groups_left_in_4_bits_are_equalized(small_lm):
    _, ir = small_lm
    reference = ov.Core().read_model(ir)
    precisions = lambda model: {r["name"]: r["precision"] for r in layer_reports(model, reference)}
    equalized = _compress(ir, hqq_params={"equalization": "power"}, ratio=0.5)
    plain = _compress(ir, hqq_params={"equalization": "none"}, ratio=0.5)
    # NNCF's mixed precision chose the same 8-bit layers as without equalization: it ranked the weights as given
    assert precisions(equalized) == precisions(plain)
    assert {"int4_asym", "int8_asym"} <= set(precisions(plain).values())
    # the groups equalized are exactly those whose consumers all stayed in 4 bits
    chosen = precisions(plain)
    groups = find_scale_groups(reference)
    in_4_bits = [g for g in groups if all(chosen.get(c.node.get_friendly_name()) == "int4_asym" for c in g.consumers)]
    info = lambda key: int(equalized.get_rt_info(["nncf", "weight_compression", "hqq", key]).astype(str))
    assert 0 < info("equalized_groups") == len(in_4_bits) < len(groups)


def test_scaling_weights_as_they_are_compressed_equals_folding_first(small_lm, monkeypatch):
    _, ir = small_lm
    named = lambda model: {k: v for k, v in constants(model).items() if not re.fullmatch(r"Constant_\d+", k)}
    # unweighted: moments measured before and after folding differ in float rounding (their transform is tested
    # in test_hqq_activation_moments)
    params = {"equalization": "power", "activation_moments": False}
    lazy = named(_compress(ir, hqq_params=params))
    resolve = nncf_hqq.compress._resolve_settings

    def folding_first(*args):
        return dataclasses.replace(resolve(*args), equalize_at="statistics")

    monkeypatch.setattr(nncf_hqq.compress, "_resolve_settings", folding_first)
    early = named(_compress(ir, hqq_params=params))
    assert lazy.keys() == early.keys()
    for name, value in lazy.items():
        np.testing.assert_array_equal(value, early[name], err_msg=name)


NNCF_OPTIONS = {
    "mixed-precision": {"ratio": 0.8},
    "ignored-scope": {
        "ignored_scope": nncf.IgnoredScope(patterns=[".*mlp.down_proj.*", "linear_6/.*"], validate=False)
    },
    "int4-sym": {"mode": nncf.CompressWeightsMode.INT4_SYM},
    "offset-zero-points": {"hqq_params": {"zero_point_storage": "offset"}},
    "all-layers": {"all_layers": True, "backup_mode": nncf.BackupMode.INT8_ASYM},
}


def _check_chain(ir: Path, **kwargs) -> ov.Model:
    """
    The model compressed with equalization and `kwargs`: equalized, and about as close to the float model as
    the same compression without equalization.
    """
    hqq_params = kwargs.pop("hqq_params", {})
    model = _compress(ir, hqq_params={"equalization": "power", **hqq_params}, **kwargs)
    assert int(model.get_rt_info(["nncf", "weight_compression", "hqq", "equalized_groups"]).astype(str)) > 0
    plain = _compress(ir, hqq_params={"equalization": "none", **hqq_params}, **kwargs)
    reference = _logits(ov.Core().read_model(ir))
    errors = [np.abs(_logits(m) - reference).mean() / np.abs(reference).mean() for m in (model, plain)]
    assert errors[0] < 1.5 * errors[1] + 0.02  # a working compression, comparable to the plain one
    return model


@pytest.mark.parametrize("option", list(NNCF_OPTIONS))
def test_equalization_chains_with_nncf_options(small_lm, option):
    _check_chain(small_lm[1], **NNCF_OPTIONS[option])


def test_equalization_chains_with_data_free_awq(stateful_lm):
    model = _check_chain(stateful_lm[1], awq=True)
    assert model.get_rt_info(["nncf", "weight_compression", "awq"]).astype(str) == "True"


@pytest.mark.parametrize("algorithm", ["scale_estimation", "lora_correction"])
def test_equalization_chains_with_data_aware_scale_estimation_and_lora(stateful_lm, algorithm):
    _, ir = stateful_lm
    samples = [{"input_ids": TOKENS, "attention_mask": np.ones_like(TOKENS),
                "position_ids": np.arange(TOKENS.shape[1])[None], "beam_idx": np.zeros(1, np.int32)}]  # fmt: skip
    data = nncf.Dataset(samples)
    model = _check_chain(ir, dataset=data, **{algorithm: True})
    assert model.get_rt_info(["nncf", "weight_compression", algorithm]).astype(str) == "True"
    without = _compress(ir, hqq_params={"equalization": "power"})
    if algorithm == "lora_correction":  # adapters: two more MatMuls per corrected weight
        matmuls = lambda m: sum(op.get_type_name() == "MatMul" for op in m.get_ordered_ops())
        assert matmuls(model) > matmuls(without)
    else:  # scale estimation's parameters, not HQQ's, for the weights it estimated
        estimated, solved = constants(model), constants(without)
        scales = [name for name in solved if name.endswith("/scale") and name in estimated]
        assert scales and any(not np.array_equal(estimated[name], solved[name]) for name in scales)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_matmuls_without_a_foldable_producer_are_left_alone_with_a_log_line():
    x = opset.parameter([1, 4, 64], ov.Type.f32, name="x")
    first = opset.matmul(x, opset.constant(heavy_tailed_weight((64, 64))), False, True, name="first")
    residual = opset.add(first, x)  # a post-norm block: the input of `second` also feeds the residual
    gamma = opset.constant(np.linspace(0.5, 2.0, 64).astype(np.float32).reshape(1, 1, 64))
    normed = opset.multiply(residual, gamma)
    second = opset.matmul(normed, opset.constant(heavy_tailed_weight((64, 64), seed=1)), False, True, name="second")
    model = ov.Model([opset.result(opset.add(second, normed))], [x])
    records = _Records()
    nncf_logger.addHandler(records)
    level = nncf_logger.level
    nncf_logger.setLevel(logging.INFO)
    try:
        power = AdvancedCompressionParameters(equalization_params=AdvancedEqualizationParameters(method="power"))
        compressed = compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, all_layers=True,
                                      hqq=True, advanced_parameters=power)  # fmt: skip
    finally:
        nncf_logger.removeHandler(records)
        nncf_logger.setLevel(level)
    assert any("0 groups" in m and "2 MatMuls left alone" in m for m in records.messages), records.messages
    assert compressed.get_rt_info(["nncf", "weight_compression", "hqq", "equalized_groups"]).astype(str) == "0"


def _snapshot(model: ov.Model) -> tuple:
    topology = [(op.get_friendly_name(), [v.get_node().get_friendly_name() for v in op.input_values()])
                for op in model.get_ordered_ops()]  # fmt: skip
    return topology, {name: value.copy() for name, value in constants(model).items()}


@pytest.mark.parametrize("kwargs", [{}, {"awq": True}], ids=["scaled-when-compressed", "folded-first"])
def test_failure_leaves_the_model_exactly_as_given(small_lm, kwargs):
    _, ir = small_lm
    model = ov.Core().read_model(ir)
    groups = find_scale_groups(model)
    group = next(g for g in groups if g.kind == ProducerKind.GATED)
    poisoned = group.consumers[0].node  # down_proj's weight, after every other group is planned
    value = poisoned.get_data().copy()
    value.flat[7] = np.nan
    new = opset.constant(value, dtype=poisoned.get_element_type(), name=poisoned.get_friendly_name())
    for target in list(poisoned.output(0).get_target_inputs()):
        target.replace_source_output(new.output(0))
    before = _snapshot(model)
    with pytest.raises(nncf.ValidationError, match="NaN"):
        _compress(model, hqq_params={"equalization": "power"}, **kwargs)
    after = _snapshot(model)
    assert after[0] == before[0]
    assert after[1].keys() == before[1].keys()
    for name, value in before[1].items():
        np.testing.assert_array_equal(after[1][name], value, err_msg=name)
    assert not model.has_rt_info(["nncf"])
