"""
The one place that touches NNCF's internal (non-exported) API: its imports, and the hooks by which nncf-hqq takes
part in NNCF's weight compression, each a call into `nncf_hqq.compression_session`.

NNCF is reached in four ways: `WeightCompression` subclassed (five methods), its OpenVINO backend subclassed (three
methods), and two module attributes replaced while `compress_weights` runs (the class NNCF's OpenVINO entry point
builds, and the backend's `compress_weight`, so that given codes are kept). An NNCF upgrade is this module to
check; `tests/openvino/native/quantization/test_nncf_hooks.py` fails if NNCF stops calling a hook. Tested with the
NNCF version pinned in pyproject.toml.
"""

import dataclasses
import threading
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import openvino as ov
from nncf.common.graph import NNCFGraph
from nncf.common.logging.track_progress import track
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
from nncf.tensor import Tensor
from nncf.tensor.functions.openvino_numeric import DTYPE_MAP

from nncf_hqq.code_packing import keeping_given_codes
from nncf_hqq.compression_session import CompressionSession
from nncf_hqq.compression_session import SeamSettings
from nncf_hqq.openvino_graph import can_take_zero_point_offset
from nncf_hqq.openvino_graph import norm_scale_feeding

__all__ = [
    "CompressWeightsMode",
    "CompressedWeight",
    "NNCFGraph",
    "WeightCompressionConfig",
    "WeightCompressionParameters",
    "reshape_weight_for_grouped_quantization",
    "track",
    "weight_compression_class",
]


class PrecomputedParamsOVBackend(OVWeightCompressionAlgoBackend):
    """
    NNCF's OpenVINO weight-compression backend with nncf-hqq's `session` around its transform and each weight's
    compression subgraph, and the queries the session and HQQ make about a weight's place in the graph.
    """

    def __init__(self, model: ov.Model, settings: SeamSettings):
        super().__init__(model)
        self.session = CompressionSession(settings, self)
        self._codes_needed_after_subgraph = False  # NNCF's LoRA correction reads a weight's codes after its subgraph

    # hooks
    def transform_model(
        self,
        model: ov.Model,
        graph: NNCFGraph,
        weight_compression_parameters: Iterable[WeightCompressionParameters],
        precomputed_compressed_weights: dict[str, CompressedWeight] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> ov.Model:
        # NNCF hands over its progress tracker; the sequence behind it is the list of weights to compress
        weights = list(getattr(weight_compression_parameters, "sequence", weight_compression_parameters))
        progress = weight_compression_parameters if isinstance(weight_compression_parameters, track) else weights
        parent = super()
        lora_correction = kwargs.get("lora_correction_algo", args[0] if args else None)
        self._codes_needed_after_subgraph = lora_correction is not None

        def nncf_transform(precomputed: dict | None) -> ov.Model:
            return parent.transform_model(model, graph, progress, precomputed, *args, **kwargs)

        return self.session.transform(model, graph, weights, precomputed_compressed_weights, nncf_transform)

    def _replace_node(self, src_node: ov.Node, new_node: ov.Node) -> None:
        self.session.journal.record_consumers(src_node.output(0))  # re-wired, recursively through Converts
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
        codes_type = DTYPE_MAP[compression_config.compression_dtype] if compression_config.is_integer else None
        weight, precomputed = self.session.before_subgraph(
            const_node_name, weight, precomputed_compressed_weight, compression_config.is_integer, codes_type
        )
        mul, compressed = super()._create_compression_subgraph(
            weight, compression_config, reduction_axes, const_node_name, weight_port_id, const_dtype,
            should_add_convert_node, precomputed,
        )  # fmt: skip
        if compression_config.is_integer:
            self.session.after_subgraph(mul, compressed, const_node_name, compression_config.num_bits, codes_type)
        if not self._codes_needed_after_subgraph:
            # NNCF keeps what this returns until the next weight's subgraph is made: not the codes, now in the graph
            compressed = dataclasses.replace(compressed, tensor=None)
        return mul, compressed

    # queries
    def constant_nodes(self) -> dict[str, ov.Node]:
        return {name: node for name, node in self.name_to_node_mapping.items() if node.get_type_name() == "Constant"}

    def set_constant(self, name: str, node: ov.Node) -> None:
        self.name_to_node_mapping[name] = node

    def read_weight(self, wp: WeightCompressionParameters, model: ov.Model, graph: NNCFGraph) -> Tensor:
        return self.get_weight(wp.node_with_weight, wp.weight_port_id, model, graph)

    @staticmethod
    def read_constant(node: ov.Node) -> np.ndarray:
        return get_const_value_as_numpy_tensor(node)

    @staticmethod
    def weight_constant_name(wp: WeightCompressionParameters) -> str:
        return wp.node_with_weight.layer_attributes.constant_attributes[wp.weight_port_id]["name"]

    def weight_axis(self, wp: WeightCompressionParameters) -> int:
        """The weight's (single) reduction axis, non-negative."""
        return wp.reduction_axes[0] % len(self.get_weight_shape(wp.node_with_weight, wp.weight_port_id, None))

    def matmul_with_weight(self, wp: WeightCompressionParameters) -> ov.Node | None:
        """The weight's node if it is a MatMul taking the weight as its second input, else None."""
        node = self.name_to_node_mapping.get(wp.node_with_weight.node_name)
        if node is None or node.get_type_name() != "MatMul" or wp.weight_port_id != 1:
            return None
        return node

    def supports_zero_point_offset(self, wp: WeightCompressionParameters) -> bool:
        """Whether the weight's zero point can be stored as an integer one plus per-group offsets."""
        matmul = self.matmul_with_weight(wp)
        const = self.name_to_node_mapping.get(self.weight_constant_name(wp))
        return matmul is not None and const is not None and can_take_zero_point_offset(matmul, const, wp.reduction_axes)

    def input_norm_scale(self, wp: WeightCompressionParameters) -> Tensor | None:
        """The per-channel scale of the normalisation layer feeding the weight's MatMul, or None."""
        matmul = self.matmul_with_weight(wp)
        scale = None if matmul is None else norm_scale_feeding(matmul)
        return None if scale is None else Tensor(scale)


def weight_compression_class(settings: SeamSettings) -> type[WeightCompression]:
    """
    A `WeightCompression` subclass that runs nncf-hqq's `CompressionSession` (built with `settings`) within
    NNCF's algorithm, undoes its graph edits on any exception, and records `settings.rt_info` and the session's
    summary under `nncf/weight_compression/<rt_info_key>/`.
    """

    class PrecomputedParamsWeightCompression(WeightCompression):
        def apply(self, model: ov.Model, graph: NNCFGraph, *args, **kwargs) -> ov.Model:
            try:
                return super().apply(model, graph, *args, **kwargs)
            except BaseException:
                if getattr(self, "_backend_entity", None) is not None:
                    self._backend_entity.session.undo()
                raise

        def get_weight_compression_parameters(self, model: ov.Model, graph: NNCFGraph):
            all_weight_params, *rest = super().get_weight_compression_parameters(model, graph)
            self._backend_entity.session.weights_listed(model, graph, all_weight_params)
            return (all_weight_params, *rest)

        def apply_mixed_precision(self, ratio_defining_params, model: ov.Model, graph: NNCFGraph, *args, **kwargs):
            super().apply_mixed_precision(ratio_defining_params, model, graph, *args, **kwargs)
            self._backend_entity.session.precision_chosen(model)

        def set_backend_entity(self, model: ov.Model) -> None:
            self._backend_entity = PrecomputedParamsOVBackend(model, settings)

        def apply_with_parameters(self, model, graph, *args, **kwargs):
            model = super().apply_with_parameters(model, graph, *args, **kwargs)
            recorded = {**settings.rt_info, **self._backend_entity.session.summary()}
            dump_parameters(model, recorded, algo_name="weight_compression", path=[settings.rt_info_key])
            return model

    return PrecomputedParamsWeightCompression


_PATCH_LOCK = threading.Lock()


@contextmanager
def openvino_weight_compression_class(cls: type[WeightCompression]) -> Iterator[None]:
    """
    Makes NNCF's OpenVINO `compress_weights` implementation build `cls` instead of `WeightCompression`, and its
    OpenVINO backend use the codes of a precomputed integer weight when they are given (NNCF would recompute them
    from its scale and zero point).
    """
    with _PATCH_LOCK:
        original_class = ov_quantize_model.WeightCompression
        original_compress_weight = nncf_openvino_backend.compress_weight
        ov_quantize_model.WeightCompression = cls
        nncf_openvino_backend.compress_weight = keeping_given_codes(original_compress_weight)
        try:
            yield
        finally:
            ov_quantize_model.WeightCompression = original_class
            nncf_openvino_backend.compress_weight = original_compress_weight


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
