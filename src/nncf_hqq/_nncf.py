"""
The one place that touches NNCF's internal (non-exported) API.

Everything nncf-hqq needs from inside NNCF is imported or subclassed here, so an NNCF upgrade is one module to
check. Tested with the NNCF version pinned in pyproject.toml.
"""

import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nncf
import openvino as ov
from nncf.common.graph import NNCFGraph
from nncf.common.logging.track_progress import track
from nncf.openvino.quantization import quantize_model as ov_quantize_model
from nncf.openvino.rt_info import dump_parameters
from nncf.parameters import CompressWeightsMode
from nncf.quantization.algorithms.weight_compression.algorithm import WeightCompression
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionParameters
from nncf.quantization.algorithms.weight_compression.openvino_backend import OVWeightCompressionAlgoBackend
from nncf.quantization.algorithms.weight_compression.parameters import CompressedWeight
from nncf.quantization.algorithms.weight_compression.weight_lowering import calculate_integer_quantization_params
from nncf.quantization.algorithms.weight_compression.weight_lowering import reshape_weight_for_grouped_quantization
from nncf.tensor import Tensor
from nncf.tensor import TensorDataType
from openvino import opset13 as opset

__all__ = [
    "CompressWeightsMode",
    "CompressedWeight",
    "NNCFGraph",
    "WeightCompressionConfig",
    "WeightCompressionParameters",
    "calculate_integer_quantization_params",
    "reshape_weight_for_grouped_quantization",
    "track",
    "weight_compression_class",
]

# (model, graph, weights to compress, backend, earlier precomputed parameters or None)
#     -> precomputed parameters for NNCF's compression step
PrecomputeFn = Callable[
    [ov.Model, NNCFGraph, list[WeightCompressionParameters], "OVWeightCompressionAlgoBackend", dict | None],
    dict[str, CompressedWeight],
]


_FLOAT_DTYPES = (TensorDataType.float16, TensorDataType.float32, TensorDataType.float64)


class PrecomputedParamsOVBackend(OVWeightCompressionAlgoBackend):
    """
    OpenVINO weight-compression backend that computes precomputed scales/zero points with an extra algorithm
    right before NNCF writes the compressed constants, after AWQ and scale estimation have run.

    Zero points that are not integer-valued are stored as f16 constants (`Constant(f16) -> Subtract`) instead of
    NNCF's u4/u8 zero point, which would silently truncate them.
    """

    def __init__(self, model: ov.Model, precompute: PrecomputeFn):
        super().__init__(model)
        self._precompute = precompute

    def transform_model(
        self,
        model: ov.Model,
        graph: NNCFGraph,
        weight_compression_parameters: Iterable[WeightCompressionParameters],
        precomputed_compressed_weights: dict[str, CompressedWeight] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> ov.Model:
        # NNCF hands over its progress tracker; the sequence behind it is the list of weights to compress.
        all_weight_params = list(getattr(weight_compression_parameters, "sequence", weight_compression_parameters))
        if not isinstance(weight_compression_parameters, track):
            weight_compression_parameters = all_weight_params
        precomputed = self._precompute(model, graph, all_weight_params, self, precomputed_compressed_weights)
        return super().transform_model(model, graph, weight_compression_parameters, precomputed, *args, **kwargs)

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
        mul, compressed_weight = super()._create_compression_subgraph(
            weight,
            compression_config,
            reduction_axes,
            const_node_name,
            weight_port_id,
            const_dtype,
            should_add_convert_node,
            precomputed_compressed_weight,
        )
        zero_point = compressed_weight.zero_point
        if zero_point is not None and zero_point.dtype in _FLOAT_DTYPES:
            _replace_zero_point_with_f16(mul, const_node_name, zero_point)
        return mul, compressed_weight


def _replace_zero_point_with_f16(output_node: ov.Node, const_node_name: str, zero_point) -> None:
    """Replaces `Constant(u4 zero point) -> Convert(f16)` under `output_node` by a `Constant(f16)` zero point."""
    subtract_name = f"{const_node_name}/zero_point/subtract"
    stack = [output_node]
    while stack:
        node = stack.pop()
        if node.get_friendly_name() == subtract_name:
            f16_zero_point = opset.constant(
                zero_point.as_numpy_tensor().data, dtype=ov.Type.f16, name=f"{const_node_name}/zero_point"
            )
            node.input(1).replace_source_output(f16_zero_point.output(0))
            return
        stack.extend(inp.get_source_output().get_node() for inp in node.inputs())
    msg = f"Zero point subtract {subtract_name} not found in the compression subgraph."
    raise nncf.InternalError(msg)


def weight_compression_class(
    precompute: PrecomputeFn,
    check_weight: Callable[[str, Tensor], None],
    rt_info_key: str,
    rt_info: dict[str, Any],
) -> type[WeightCompression]:
    """
    Returns a `WeightCompression` subclass that
    - calls `check_weight(name, weight)` on every weight to compress before anything changes the model,
    - runs `precompute` on the weights right before NNCF compresses them (after AWQ and scale estimation),
    - records `rt_info` in the model under `nncf/weight_compression/<rt_info_key>/`.
    """

    class PrecomputedParamsWeightCompression(WeightCompression):
        def get_weight_compression_parameters(self, model: ov.Model, graph: NNCFGraph):
            all_weight_params, *rest = super().get_weight_compression_parameters(model, graph)
            for wp in all_weight_params:
                weight = self._backend_entity.get_weight(wp.node_with_weight, wp.weight_port_id, model, graph)
                check_weight(wp.weight_name, weight)
            return (all_weight_params, *rest)

        def set_backend_entity(self, model: ov.Model) -> None:
            self._backend_entity = PrecomputedParamsOVBackend(model, precompute)

        def apply_with_parameters(self, model, graph, *args, **kwargs):
            model = super().apply_with_parameters(model, graph, *args, **kwargs)
            dump_parameters(model, rt_info, algo_name="weight_compression", path=[rt_info_key])
            return model

    return PrecomputedParamsWeightCompression


_PATCH_LOCK = threading.Lock()


@contextmanager
def openvino_weight_compression_class(cls: type[WeightCompression]) -> Iterator[None]:
    """Makes NNCF's OpenVINO `compress_weights` implementation build `cls` instead of `WeightCompression`."""
    with _PATCH_LOCK:
        original = ov_quantize_model.WeightCompression
        ov_quantize_model.WeightCompression = cls
        try:
            yield
        finally:
            ov_quantize_model.WeightCompression = original


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
