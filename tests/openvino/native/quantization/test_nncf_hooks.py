"""NNCF still calls every hook of nncf_hqq's seam (`nncf_hqq._nncf`): if it stopped, hqq=True would silently give
NNCF's own result."""

import functools
from collections import Counter

import pytest
from nncf import CompressWeightsMode

import nncf_hqq.compress
from nncf_hqq import _nncf
from nncf_hqq import compress_weights
from tests.openvino.native.models import bert_mlp_weights
from tests.openvino.native.models import mlp_model

BACKEND_HOOKS = ("transform_model", "_create_compression_subgraph", "_replace_node")
ALGORITHM_HOOKS = (
    "apply",
    "get_weight_compression_parameters",
    "apply_mixed_precision",
    "set_backend_entity",
    "apply_with_parameters",
)


def _counting(calls: Counter, name: str, method):
    @functools.wraps(method)
    def counted(*args, **kwargs):
        calls[name] += 1
        return method(*args, **kwargs)

    return counted


@pytest.mark.parametrize("options", [{}, {"ratio": 0.7, "awq": True}], ids=["default", "ratio-awq"])
def test_nncf_calls_every_hook_of_the_seam(monkeypatch, options):
    calls = Counter()
    for name in BACKEND_HOOKS:
        method = getattr(_nncf.PrecomputedParamsOVBackend, name)
        monkeypatch.setattr(_nncf.PrecomputedParamsOVBackend, name, _counting(calls, name, method))
    build = nncf_hqq.compress.weight_compression_class

    def counting_class(*args, **kwargs):
        cls = build(*args, **kwargs)
        for name in ALGORITHM_HOOKS:
            setattr(cls, name, _counting(calls, name, cls.__dict__[name]))
        return cls

    monkeypatch.setattr(nncf_hqq.compress, "weight_compression_class", counting_class)
    given_codes = _nncf.keeping_given_codes

    def counting_codes(compress_weight):
        return _counting(calls, "compress_weight", given_codes(compress_weight))

    monkeypatch.setattr(_nncf, "keeping_given_codes", counting_codes)
    model = compress_weights(mlp_model(*bert_mlp_weights()), mode=CompressWeightsMode.INT4_ASYM, group_size=64,
                             hqq=True, **options)  # fmt: skip
    hooks = (*BACKEND_HOOKS, *ALGORITHM_HOOKS, "compress_weight")
    assert {name: calls[name] for name in hooks if calls[name] == 0} == {}, "NNCF no longer calls these hooks"
    assert model.get_rt_info(["nncf", "weight_compression", "hqq", "enabled"]).astype(str) == "True"
    assert calls["apply"] == 1 and calls["transform_model"] == 1
