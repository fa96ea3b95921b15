"""
The one place that touches NNCF's internal (non-exported) API: its imports, the names NNCF gives the nodes of a
compressed weight, the signatures nncf-hqq relies on, and the hooks by which nncf-hqq takes part in NNCF's weight
compression.

The hooks are three module attributes of NNCF replaced while an nncf-hqq call runs (`session_active`): the
`WeightCompression` class that NNCF's OpenVINO entry point builds (two methods overridden), the OpenVINO backend
class that `WeightCompression.set_backend_entity` builds (three methods overridden), and the backend's
`compress_weight` (so that a solver's codes are kept). Each hook hands plain data to the session of the calling
context (`CompressionSession`, set by `nncf_hqq.compress`) and writes what it returns back into NNCF's objects; in
any other context (a plain `nncf.compress_weights` in another thread meanwhile) every hook is NNCF's own code.
Pinned to one NNCF release (pyproject.toml); `tests/openvino/native/quantization/test_nncf_hooks.py` fails if a
contract below changes or NNCF stops calling a hook.
"""

import contextvars
import dataclasses
import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov
from nncf.common.graph import NNCFGraph
from nncf.common.logging.track_progress import track
from nncf.common.utils.backend import BackendType
from nncf.common.utils.backend import get_backend
from nncf.openvino.graph.node_utils import get_const_value_as_numpy_tensor
from nncf.openvino.quantization import quantize_model as ov_quantize_model
from nncf.openvino.rt_info import dump_parameters
from nncf.parameters import CompressWeightsMode
from nncf.quantization.algorithms.weight_compression import openvino_backend as nncf_openvino_backend
from nncf.quantization.algorithms.weight_compression.algorithm import WeightCompression
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionParameters
from nncf.quantization.algorithms.weight_compression.openvino_backend import OVWeightCompressionAlgoBackend
from nncf.quantization.algorithms.weight_compression.parameters import CompressedWeight
from nncf.quantization.algorithms.weight_compression.weight_lowering import reshape_weight_for_grouped_quantization
from nncf.quantization.quantize_model import compress_weights as nncf_compress_weights
from nncf.tensor.functions.openvino_numeric import DTYPE_MAP

__all__ = [
    "CompressWeightsMode",
    "CompressedWeight",
    "WeightCompressionConfig",
    "WeightSite",
    "codes_constant_name",
    "is_openvino_model",
    "nncf_compress_weights",
    "nncf_rt_info_restored_on_error",
    "read_constant",
    "record_rt_info",
    "reshape_weight_for_grouped_quantization",
    "scale_constant_name",
    "session_active",
    "track",
    "zero_point_constant_name",
    "zero_point_subtract_name",
]

# ------------------------------------------------------------------------------------------- NNCF's contracts

RT_INFO_PATH = ["hqq"]  # nncf-hqq's record in the model: rt_info nncf/weight_compression/hqq/


def codes_constant_name(weight_constant_name: str) -> str:
    """The codes constant of NNCF's compression subgraph of a weight carries the weight constant's name."""
    return weight_constant_name


def scale_constant_name(weight_constant_name: str) -> str:
    return f"{weight_constant_name}/scale"


def zero_point_constant_name(weight_constant_name: str) -> str:
    return f"{weight_constant_name}/zero_point"


def zero_point_subtract_name(weight_constant_name: str) -> str:
    """The Subtract of the zero point in NNCF's compression subgraph of an asymmetric weight."""
    return f"{weight_constant_name}/zero_point/subtract"


def weight_constant_name(wp: WeightCompressionParameters) -> str:
    """The friendly name of the Constant holding the weight NNCF compresses."""
    return wp.node_with_weight.layer_attributes.constant_attributes[wp.weight_port_id]["name"]


def is_openvino_model(model: Any) -> bool:
    return get_backend(model) == BackendType.OPENVINO


def read_constant(node: ov.Node) -> np.ndarray:
    """A Constant's value as NNCF's OpenVINO backend reads it (bf16 as float32)."""
    return get_const_value_as_numpy_tensor(node)


def record_rt_info(model: ov.Model, values: dict[str, Any]) -> None:
    """Records `values` in the model's rt_info, nncf/weight_compression/hqq/<key>, as NNCF records its own."""
    dump_parameters(model, values, algo_name="weight_compression", path=RT_INFO_PATH)


# NNCF's signatures that the hooks bind arguments by (the test of the hooks pins these and the overridden ones)
TRANSFORM_MODEL = inspect.signature(OVWeightCompressionAlgoBackend.transform_model)
COMPRESS_WEIGHT = inspect.signature(nncf_openvino_backend.compress_weight)


def _backend_of(algorithm: WeightCompression) -> OVWeightCompressionAlgoBackend:
    """The backend `WeightCompression.set_backend_entity` made for the model being compressed."""
    return algorithm._backend_entity


# ------------------------------------------------------------------------------------ what the hooks hand over


@dataclass(frozen=True)
class WeightSite:
    """
    A weight NNCF compresses, as the hooks hand it to nncf-hqq.

    :param name: NNCF's name of the weight.
    :param constant_name: The friendly name of its Constant.
    :param config: NNCF's compression config of the weight (None: left in float).
    :param reduction_axes: The axes along which the weight's rows share quantization parameters.
    :param axis: The single reduction axis, non-negative; None with several.
    :param num_weights: The number of weights.
    :param constant: Its Constant node, as the backend maps it now (None if unknown).
    :param matmul: The MatMul node taking the weight as its second input, or None.
    """

    name: str
    constant_name: str
    config: WeightCompressionConfig | None
    reduction_axes: tuple[int, ...]
    axis: int | None
    num_weights: int
    constant: ov.Node | None
    matmul: ov.Node | None


def _site(backend: OVWeightCompressionAlgoBackend, wp: WeightCompressionParameters) -> WeightSite:
    mapping = backend.name_to_node_mapping or {}
    constant_name = weight_constant_name(wp)
    constant = mapping.get(constant_name)
    axis = None
    if len(wp.reduction_axes) == 1:
        rank = len(backend.get_weight_shape(wp.node_with_weight, wp.weight_port_id, None))
        axis = wp.reduction_axes[0] % rank
    node = mapping.get(wp.node_with_weight.node_name)
    matmul = node if node is not None and node.get_type_name() == "MatMul" and wp.weight_port_id == 1 else None
    return WeightSite(
        wp.weight_name, constant_name, wp.compression_config, tuple(wp.reduction_axes), axis, wp.num_weights,
        constant, matmul,
    )  # fmt: skip


def _constants(backend: OVWeightCompressionAlgoBackend) -> dict[str, ov.Node]:
    return {name: node for name, node in backend.name_to_node_mapping.items() if node.get_type_name() == "Constant"}


# ------------------------------------------------------------------------------------------------------ hooks

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("nncf_hqq_session", default=None)


class _WeightCompression(WeightCompression):
    """NNCF's algorithm, telling the active session when the weights are listed and their precisions chosen."""

    def get_weight_compression_parameters(self, model: ov.Model, graph: NNCFGraph):
        all_weight_params, *rest = super().get_weight_compression_parameters(model, graph)
        session = _ACTIVE.get()
        if session is not None:
            self._hqq_listed = all_weight_params  # their configs change in the mixed-precision step
            backend = _backend_of(self)
            if session.settings.eager:  # every weight checked before AWQ or LoRA correction edit the model
                for wp in all_weight_params:
                    session.check_weight(wp.weight_name, backend.get_weight(wp.node_with_weight, wp.weight_port_id,
                                                                            model, graph))  # fmt: skip
            if session.settings.equalize_at == "statistics":
                self._equalize(session, model, all_weight_params)
        return (all_weight_params, *rest)

    def apply_mixed_precision(self, ratio_defining_params, model: ov.Model, graph: NNCFGraph, *args, **kwargs):
        super().apply_mixed_precision(ratio_defining_params, model, graph, *args, **kwargs)
        session = _ACTIVE.get()
        if session is not None and session.settings.equalize_at == "precision":
            self._equalize(session, model, self._hqq_listed)

    def _equalize(self, session, model: ov.Model, all_weight_params) -> None:
        backend = _backend_of(self)
        sites = [_site(backend, wp) for wp in all_weight_params]
        backend.name_to_node_mapping.update(session.equalize(model, sites, _constants(backend), materialize=True))


class _OVBackend(OVWeightCompressionAlgoBackend):
    """NNCF's OpenVINO backend, with the active session around its transform and each weight's subgraph."""

    def transform_model(self, model, graph, weight_compression_parameters, *args, **kwargs) -> ov.Model:
        session = _ACTIVE.get()
        if session is None:
            return super().transform_model(model, graph, weight_compression_parameters, *args, **kwargs)
        arguments = TRANSFORM_MODEL.bind(self, model, graph, weight_compression_parameters, *args, **kwargs).arguments
        # NNCF hands over its progress tracker; the sequence behind it is the list of weights to compress
        weights = list(getattr(weight_compression_parameters, "sequence", weight_compression_parameters))
        sites = [_site(self, wp) for wp in weights]
        self.name_to_node_mapping.update(session.equalize(model, sites, _constants(self), materialize=False))
        sites = [_site(self, wp) for wp in weights]  # the constants equalization replaced
        precomputed = arguments.get("precomputed_compressed_weights")
        solved_now = session.plan(model, sites, precomputed)
        if session.settings.eager:  # solved before the transform: each weight read now, and again by NNCF
            precomputed = arguments["precomputed_compressed_weights"] = dict(precomputed or {})
            by_name = {wp.weight_name: wp for wp in weights}
            for site in track(solved_now, description="Applying HQQ", weights=[s.num_weights for s in solved_now]):
                wp = by_name[site.name]
                weight = self.get_weight(wp.node_with_weight, wp.weight_port_id, model, graph)
                precomputed[site.name] = session.solve_before_transform(site, weight)
        session.begin_transform(sites, precomputed, lora_correction=arguments.get("lora_correction_algo") is not None)
        del arguments["self"]
        try:
            model = super().transform_model(**arguments)
            session.finish_transform(model)
        finally:
            session.end_transform()
        return model

    def _replace_node(self, src_node: ov.Node, new_node: ov.Node) -> None:
        session = _ACTIVE.get()
        if session is not None:
            session.journal.record_consumers(src_node.output(0))  # re-wired, recursively through Converts
        super()._replace_node(src_node, new_node)

    def _create_compression_subgraph(
        self,
        weight,
        compression_config: WeightCompressionConfig,
        reduction_axes,
        const_node_name: str,
        weight_port_id: int,
        const_dtype,
        should_add_convert_node: bool,
        precomputed_compressed_weight: CompressedWeight | None = None,
    ):
        session = _ACTIVE.get()
        if session is None:
            return super()._create_compression_subgraph(
                weight, compression_config, reduction_axes, const_node_name, weight_port_id, const_dtype,
                should_add_convert_node, precomputed_compressed_weight,
            )  # fmt: skip
        codes_type = DTYPE_MAP[compression_config.compression_dtype] if compression_config.is_integer else None
        weight, precomputed = session.before_subgraph(
            const_node_name, weight, precomputed_compressed_weight, compression_config.is_integer, codes_type
        )
        mul, compressed = super()._create_compression_subgraph(
            weight, compression_config, reduction_axes, const_node_name, weight_port_id, const_dtype,
            should_add_convert_node, precomputed,
        )  # fmt: skip
        if compression_config.is_integer:
            session.after_subgraph(mul, compressed, const_node_name, compression_config.num_bits, codes_type)
        if not session.codes_needed_after_subgraph:
            # NNCF keeps what this returns until the next weight's subgraph is made: not the codes, now in the graph
            compressed = dataclasses.replace(compressed, tensor=None)
        return mul, compressed


def _compress_weight_keeping_given_codes(*args, **kwargs):
    """NNCF's `compress_weight`, except that in a session a precomputed integer weight with its codes is kept."""
    arguments = COMPRESS_WEIGHT.bind(*args, **kwargs).arguments
    given = arguments.get("precomputed_compressed_weight")
    if _ACTIVE.get() is not None and given is not None and given.tensor is not None and arguments["config"].is_integer:
        return given
    return _ORIGINALS["compress_weight"](*args, **kwargs)


_ORIGINALS = {
    "WeightCompression": ov_quantize_model.WeightCompression,
    "OVWeightCompressionAlgoBackend": nncf_openvino_backend.OVWeightCompressionAlgoBackend,
    "compress_weight": nncf_openvino_backend.compress_weight,
}
_HOOKS = (
    (ov_quantize_model, "WeightCompression", _WeightCompression),
    (nncf_openvino_backend, "OVWeightCompressionAlgoBackend", _OVBackend),
    (nncf_openvino_backend, "compress_weight", _compress_weight_keeping_given_codes),
)
_install_lock = threading.Lock()
_sessions_running = 0


@contextmanager
def session_active(session: Any) -> Iterator[None]:
    """
    Makes `session` the one NNCF's weight compression reports to in this context (thread) for the duration of the
    block, the hooks installed while any such block runs.
    """
    global _sessions_running
    with _install_lock:
        if _sessions_running == 0:
            for module, name, hook in _HOOKS:
                setattr(module, name, hook)
        _sessions_running += 1
    token = _ACTIVE.set(session)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        with _install_lock:
            _sessions_running -= 1
            if _sessions_running == 0:
                for module, name, _ in _HOOKS:
                    setattr(module, name, _ORIGINALS[name])


@contextmanager
def nncf_rt_info_restored_on_error(model: ov.Model) -> Iterator[None]:
    """
    On an exception, removes the `nncf` rt_info section NNCF's OpenVINO entry point adds to the model before any
    algorithm runs (`nncf/friendly_names_were_updated`), if the model had no such section before.
    """
    had_nncf_rt_info = model.has_rt_info(["nncf"])
    try:
        yield
    except BaseException:
        if not had_nncf_rt_info and model.has_rt_info(["nncf"]):
            del model.get_rt_info()["nncf"]
        raise
