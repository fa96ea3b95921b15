"""
The seam into NNCF (`nncf_hqq._nncf`): NNCF still calls every hook (if it stopped, hqq=True would silently give
NNCF's own result), the private contracts the hooks rely on are those of the pinned release, and a plain
`nncf.compress_weights` running meanwhile in another thread is NNCF's alone.
"""

import functools
import importlib.metadata
import inspect
import re
import threading
from collections import Counter
from pathlib import Path

import nncf
import numpy as np
import pytest
import tomllib
from nncf import CompressWeightsMode
from nncf.openvino.quantization import quantize_model as ov_quantize_model
from nncf.quantization.algorithms.weight_compression import openvino_backend
from nncf.quantization.algorithms.weight_compression.algorithm import WeightCompression

from nncf_hqq import _nncf
from nncf_hqq import compress_weights
from nncf_hqq.compression_session import CompressionSession
from tests.openvino.native.models import bert_mlp_weights
from tests.openvino.native.models import constants
from tests.openvino.native.models import mlp_model

BACKEND_HOOKS = ("transform_model", "_create_compression_subgraph", "_replace_node")
ALGORITHM_HOOKS = ("get_weight_compression_parameters", "apply_mixed_precision")
REPO = Path(__file__).resolve().parents[4]


def _counting(calls: Counter, name: str, method):
    @functools.wraps(method)
    def counted(*args, **kwargs):
        calls[name] += 1
        return method(*args, **kwargs)

    return counted


def _mlp():
    return mlp_model(*bert_mlp_weights())


def _named_constants(model) -> dict[str, np.ndarray]:
    """The constants of `model` but those OpenVINO names after a global counter (`Constant_<n>`)."""
    return {name: value for name, value in constants(model).items() if not re.fullmatch(r"Constant_\d+", name)}


@pytest.mark.parametrize("options", [{}, {"ratio": 0.7, "awq": True}], ids=["default", "ratio-awq"])
def test_nncf_calls_every_hook_of_the_seam(monkeypatch, options):
    calls = Counter()
    for cls, names in ((_nncf._OVBackend, BACKEND_HOOKS), (_nncf._WeightCompression, ALGORITHM_HOOKS)):
        for name in names:
            monkeypatch.setattr(cls, name, _counting(calls, name, cls.__dict__[name]))
    hooks = tuple(
        (module, name, _counting(calls, "compress_weight", hook) if name == "compress_weight" else hook)
        for module, name, hook in _nncf._HOOKS
    )
    monkeypatch.setattr(_nncf, "_HOOKS", hooks)
    model = compress_weights(_mlp(), mode=CompressWeightsMode.INT4_ASYM, group_size=64, hqq=True, **options)
    expected = (*BACKEND_HOOKS, *ALGORITHM_HOOKS, "compress_weight")
    assert {name: calls[name] for name in expected if calls[name] == 0} == {}, "NNCF no longer calls these hooks"
    assert model.get_rt_info(["nncf", "weight_compression", "hqq", "enabled"]).astype(str) == "True"
    assert calls["transform_model"] == 1 and calls["get_weight_compression_parameters"] == 1


def test_nncf_is_the_pinned_release_and_its_private_contracts_are_the_ones_the_seam_relies_on():
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [p for p in pins if re.match(r"nncf\b", p)]
    assert pin == f"nncf=={importlib.metadata.version('nncf')}", "nncf-hqq overrides this NNCF release's internals"
    parameters = lambda function: list(inspect.signature(function).parameters)
    assert parameters(openvino_backend.OVWeightCompressionAlgoBackend.transform_model) == [
        "self", "model", "graph", "weight_compression_parameters", "precomputed_compressed_weights",
        "lora_correction_algo", "compression_format", "advanced_parameters",
    ]  # fmt: skip
    assert parameters(openvino_backend.OVWeightCompressionAlgoBackend._create_compression_subgraph) == [
        "self", "weight", "compression_config", "reduction_axes", "const_node_name", "weight_port_id", "const_dtype",
        "should_add_convert_node", "precomputed_compressed_weight",
    ]  # fmt: skip
    assert parameters(openvino_backend.OVWeightCompressionAlgoBackend._replace_node) == ["self", "src_node", "new_node"]
    assert parameters(openvino_backend.compress_weight) == [
        "weight", "reduction_axes", "config", "precomputed_compressed_weight",
    ]  # fmt: skip
    assert parameters(WeightCompression.get_weight_compression_parameters) == ["self", "model", "graph"]
    assert parameters(WeightCompression.apply_mixed_precision)[:4] == ["self", "ratio_defining_params", "model",
                                                                         "graph"]  # fmt: skip
    # the backend class NNCF builds is looked up in its module when the algorithm starts, the backend kept here
    source = inspect.getsource(WeightCompression.set_backend_entity)
    assert "weight_compression.openvino_backend import OVWeightCompressionAlgoBackend" in source
    assert "self._backend_entity = OVWeightCompressionAlgoBackend(model)" in source


def test_nncf_names_the_nodes_of_a_compressed_weight_as_the_seam_says():
    model = nncf.compress_weights(_mlp(), mode=CompressWeightsMode.INT4_ASYM, group_size=64)
    names = {op.get_friendly_name() for op in model.get_ordered_ops()}
    for weight in ("up", "gate", "down"):
        assert {
            _nncf.codes_constant_name(weight),
            _nncf.scale_constant_name(weight),
            _nncf.zero_point_constant_name(weight),
            _nncf.zero_point_subtract_name(weight),
        } <= names


def test_a_plain_nncf_call_in_another_thread_during_an_hqq_compression_is_nncfs_alone(monkeypatch):
    alone = _named_constants(nncf.compress_weights(_mlp(), mode=CompressWeightsMode.INT4_ASYM, group_size=64))
    hqq_alone = _named_constants(compress_weights(_mlp(), mode=CompressWeightsMode.INT4_ASYM, group_size=64, hqq=True))
    plain = {}

    def plain_call():
        model = nncf.compress_weights(_mlp(), mode=CompressWeightsMode.INT4_ASYM, group_size=64)
        plain.update(constants=_named_constants(model), hqq=model.has_rt_info(["nncf", "weight_compression", "hqq"]))

    before_subgraph = CompressionSession.before_subgraph
    main_thread = threading.get_ident()

    def with_a_plain_call_meanwhile(self, *args, **kwargs):
        if not plain and threading.get_ident() == main_thread:  # hooks installed: a whole plain call meanwhile
            thread = threading.Thread(target=plain_call)
            thread.start()
            thread.join()
        return before_subgraph(self, *args, **kwargs)

    monkeypatch.setattr(CompressionSession, "before_subgraph", with_a_plain_call_meanwhile)
    hqq = _named_constants(compress_weights(_mlp(), mode=CompressWeightsMode.INT4_ASYM, group_size=64, hqq=True))
    assert plain["hqq"] is False and plain["constants"].keys() == alone.keys()
    assert all(np.array_equal(plain["constants"][k], alone[k]) for k in alone)
    assert hqq.keys() == hqq_alone.keys() and all(np.array_equal(hqq[k], hqq_alone[k]) for k in hqq)
    assert any(not np.array_equal(hqq[k], alone[k]) for k in alone if k in hqq)  # HQQ did run
    # and NNCF's own classes and function are back
    assert ov_quantize_model.WeightCompression is WeightCompression
    assert openvino_backend.OVWeightCompressionAlgoBackend is _nncf._ORIGINALS["OVWeightCompressionAlgoBackend"]
    assert openvino_backend.compress_weight is _nncf._ORIGINALS["compress_weight"]
