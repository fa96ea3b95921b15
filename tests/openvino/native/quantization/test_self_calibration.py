"""Self-written calibration text: the sampler, the model's own sequences, and compression on them."""

import dataclasses
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import pytest

from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import compress_weights
from nncf_hqq.calibration.dataset import stateful_llm_dataset
from nncf_hqq.calibration.generate import generate_sequences
from nncf_hqq.calibration.generate import sample_next_tokens
from nncf_hqq.calibration.parameters import SelfCalibrationParameters
from nncf_hqq.calibration.parameters import bos_token_id
from tests.openvino.native.models import linear_model

VOCAB = 384
F32 = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """The IR file of a random 2-layer Llama exported by optimum-intel (stateful, f32)."""
    import torch
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1)  # fmt: skip
    out_dir = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(out_dir / "hf")
    main_export(str(out_dir / "hf"), output=str(out_dir), task="text-generation-with-past",
                ov_config=OVConfig(dtype="fp32"), convert_tokenizer=False)  # fmt: skip
    return out_dir / "openvino_model.xml"


def _f32(model: ov.Model, device: str) -> ov.CompiledModel:
    return ov.Core().compile_model(model, device, F32)


def test_sampling_keeps_to_the_nucleus_and_follows_the_temperature():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    draws = np.concatenate([sample_next_tokens(logits[i : i + 8], 1.0, 0.9, rng) for i in range(0, 4000, 8)])
    counts = np.bincount(draws, minlength=4) / draws.size
    assert counts[3] == 0  # outside the 0.9 nucleus {0, 1, 2} (mass 0.95)
    np.testing.assert_allclose(counts[:3], np.array([0.5, 0.3, 0.15]) / 0.95, atol=0.03)
    greedy = sample_next_tokens(np.log(np.array([[0.1, 0.6, 0.3]] * 16)), 1.0, 0.01, rng)
    assert (greedy == 1).all()
    hot = np.concatenate([sample_next_tokens(logits[i : i + 8], 100.0, 1.0, rng) for i in range(0, 4000, 8)])
    assert abs(np.bincount(hot, minlength=4)[3] / hot.size - 0.25) < 0.03  # nearly uniform
    top2 = np.concatenate([sample_next_tokens(logits[i : i + 8], 1.0, 1.0, rng, top_k=2) for i in range(0, 4000, 8)])
    np.testing.assert_allclose(np.bincount(top2, minlength=4) / top2.size, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.03)
    shuffled = logits[:, [2, 0, 3, 1]]  # the candidates are found wherever they are in the vocabulary
    top1 = sample_next_tokens(shuffled[:16], 1.0, 1.0, rng, top_k=1)
    assert (top1 == 1).all()


def test_model_writes_deterministic_sequences_from_bos_and_spread_start_tokens(tiny_lm):
    model = ov.Core().read_model(tiny_lm)
    params = SelfCalibrationParameters(num_sequences=6, length=12, batch_size=4, seed=3, bos_token_id=1)
    first = generate_sequences(model, params)
    assert first.shape == (6, 12) and first.dtype == np.int64
    assert (first[:, 0] == 1).all() and len(set(first[:, 1])) == 6  # BOS, then start tokens across the vocabulary
    assert ((first >= 0) & (first < VOCAB)).all()
    np.testing.assert_array_equal(first, generate_sequences(model, params))
    other = SelfCalibrationParameters(num_sequences=6, length=12, batch_size=4, seed=4, bos_token_id=1)
    assert (generate_sequences(model, other)[:, 2:] != first[:, 2:]).any()
    from_bos = generate_sequences(model, dataclasses.replace(params, spread_start=False))  # the model opens too
    assert from_bos.shape == (6, 12) and (from_bos[:, 0] == 1).all() and (from_bos[:, 1:] != first[:, 1:]).any()


def test_tokens_written_with_the_kv_cache_are_the_models_greedy_choice_on_the_whole_sequence(tiny_lm):
    model = ov.Core().read_model(tiny_lm)
    greedy = SelfCalibrationParameters(num_sequences=3, length=10, batch_size=2, top_p=1e-6, bos_token_id=None)
    sequences = generate_sequences(model, greedy, compile_model=_f32)
    request = _f32(model, "CPU").create_infer_request()
    for sequence in sequences:
        sample = next(iter(stateful_llm_dataset(sequence[None], model).get_inference_data()))
        request.reset_state()
        logits = request.infer(sample)["logits"][0]
        np.testing.assert_array_equal(logits[:-1].argmax(-1)[1:], sequence[2:])  # from the first sampled token on


def test_compression_on_the_models_own_text_weighs_hqq_by_its_activations(tiny_lm):
    params = SelfCalibrationParameters(num_sequences=4, length=16, bos_token_id=bos_token_id(tiny_lm.parent))
    assert params.bos_token_id == 1
    advanced = AdvancedCompressionParameters(self_calibration=params)
    model = compress_weights(ov.Core().read_model(tiny_lm), mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32,
                             hqq=True, advanced_parameters=advanced)  # fmt: skip
    info = lambda *path: model.get_rt_info(["nncf", "weight_compression", *path]).astype(str)
    assert info("hqq", "calibration") == "self" and float(info("hqq", "calibration_seconds")) > 0
    assert info("hqq", "activation_moments_source") == "dataset" and info("hqq", "activation_moments_tokens") == "64"
    assert info("awq") in ("None", "False") and info("scale_estimation") in ("None", "False")
    assert int(info("hqq", "self_calibration_num_sequences")) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": nncf.Dataset([{}])}, "either a dataset or self_calibration"),
        ({"mode": nncf.CompressWeightsMode.INT8_ASYM}, "4-bit modes only"),
        ({"self_calibration": SelfCalibrationParameters(top_p=0.0)}, "top_p"),
        ({"self_calibration": SelfCalibrationParameters(top_k=0)}, "top_k"),
        ({"self_calibration": SelfCalibrationParameters(length=2)}, "length"),
    ],
)
def test_invalid_self_calibration_is_a_validation_error(tiny_lm, kwargs, message):
    kwargs = {"mode": nncf.CompressWeightsMode.INT4_ASYM, "self_calibration": SelfCalibrationParameters(), **kwargs}
    advanced = AdvancedCompressionParameters(self_calibration=kwargs.pop("self_calibration"))
    model = ov.Core().read_model(tiny_lm)
    with pytest.raises(nncf.ValidationError, match=message):
        compress_weights(model, hqq=True, advanced_parameters=advanced, **kwargs)
    assert not model.has_rt_info(["nncf"])


def test_a_model_without_a_kv_cache_cannot_write_text():
    model = linear_model({"w": np.ones((8, 8), np.float32)})
    with pytest.raises(nncf.ValidationError, match="input_ids"):
        generate_sequences(model)


def test_cached_text_is_keyed_by_the_weights_and_the_parameters(tmp_path):
    from nncf_hqq.calibration.self_written import _cache_file

    weight = np.arange(64, dtype=np.float32).reshape(8, 8)
    params = SelfCalibrationParameters(cache_dir=tmp_path)
    key = _cache_file(linear_model({"w": weight}), params)
    assert key.parent == tmp_path and key == _cache_file(linear_model({"w": weight.copy()}), params)
    changed = weight.copy()
    changed[3, 5] += 1
    assert _cache_file(linear_model({"w": changed}), params) != key
    assert _cache_file(linear_model({"w": weight}), SelfCalibrationParameters(cache_dir=tmp_path, seed=1)) != key
    elsewhere = SelfCalibrationParameters(cache_dir=tmp_path / "x")
    assert _cache_file(linear_model({"w": weight}), elsewhere).name == key.name
