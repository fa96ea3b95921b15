"""The codes of compressed weights in mapped files: the same model, its memory given back, nothing left on disk."""

import gc
import re
import sys

import nncf
import numpy as np
import openvino as ov
import pytest
from nncf import CompressWeightsMode

import nncf_hqq.codes_offload
import nncf_hqq.compression_session
from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import compress_weights
from nncf_hqq._nncf import _OVBackend
from tests.openvino.native.models import constant_types
from tests.openvino.native.models import constants
from tests.openvino.native.models import heavy_tailed_weight
from tests.openvino.native.models import linear_model

# 2048 x 1024 codes: 1 MiB packed in 4 bits, 2 MiB in 8 bits (offloaded); 64 x 128: a few KiB (kept in memory)
WEIGHTS = {"big": (2048, 1024), "small": (64, 128)}


def _model() -> ov.Model:
    return linear_model({name: heavy_tailed_weight(shape, seed=i) for i, (name, shape) in enumerate(WEIGHTS.items())})


def _compress(model: ov.Model, mode=CompressWeightsMode.INT4_ASYM, **advanced) -> ov.Model:
    params = AdvancedCompressionParameters(**advanced)
    if mode in (CompressWeightsMode.INT8_ASYM, CompressWeightsMode.INT8_SYM):
        return compress_weights(model, mode=mode, hqq=True, advanced_parameters=params)
    return compress_weights(model, mode=mode, group_size=64, all_layers=True, hqq=True, advanced_parameters=params)


def _named(values: dict) -> dict:
    """Without the constants OpenVINO names by a global counter (`Constant_<n>`, such as reshape shapes)."""
    return {name: value for name, value in values.items() if not re.fullmatch(r"Constant_\d+", name)}


READS_PROC_MAPS = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


def _mapped_files() -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line.split(maxsplit=5)[-1].strip() for line in maps if "nncf_hqq_codes_" in line]


@pytest.mark.parametrize(
    "mode", [CompressWeightsMode.INT4_ASYM, CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT8_ASYM]
)
def test_offloaded_model_has_the_same_constants_and_outputs_as_the_one_in_memory(tmp_path, mode):
    in_memory = _compress(_model(), mode, offload_codes=False)
    offloaded = _compress(_model(), mode, offload_codes=True, offload_dir=tmp_path)
    assert _named(constant_types(offloaded)) == _named(constant_types(in_memory))
    expected = constants(in_memory)
    for name, value in _named(constants(offloaded)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    inputs = {f"{name}_input": np.ones((1, 4, shape[1]), np.float32) for name, shape in WEIGHTS.items()}
    core = ov.Core()
    got, want = core.compile_model(offloaded, "CPU")(inputs), core.compile_model(in_memory, "CPU")(inputs)
    for output in offloaded.outputs:
        np.testing.assert_array_equal(got[output.any_name], want[output.any_name])
    assert list(tmp_path.iterdir()) == [], "the private directory is removed after the transform"
    names = {op.get_friendly_name(): op.output(0).get_names() for op in offloaded.get_ordered_ops()}
    assert (
        names["big"]
        == set()
        == {op.get_friendly_name(): op.output(0).get_names() for op in in_memory.get_ordered_ops()}["big"]
    )


@pytest.mark.parametrize(
    "mode",
    [
        CompressWeightsMode.INT8_ASYM,
        CompressWeightsMode.INT8_SYM,
        CompressWeightsMode.INT4_ASYM,
        CompressWeightsMode.INT4_SYM,
    ],
)
def test_codes_are_held_once_by_their_constant_and_not_after_it(monkeypatch, mode):
    """
    The solver writes codes into OpenVINO tensors that NNCF's codes constants share (no copy is made; 4-bit codes
    two a byte), and what NNCF keeps of a compressed weight after making its subgraph (until the next weight's)
    holds no codes.
    """
    buffers, returned = [], []
    allocate = nncf_hqq.compression_session.codes_buffer

    def allocate_and_record(*args):
        buffers.append(allocate(*args))
        return buffers[-1]

    create_subgraph = _OVBackend._create_compression_subgraph

    def create_subgraph_and_record(self, *args, **kwargs):
        mul, compressed = create_subgraph(self, *args, **kwargs)
        returned.append(compressed)
        return mul, compressed

    monkeypatch.setattr(nncf_hqq.compression_session, "codes_buffer", allocate_and_record)
    monkeypatch.setattr(_OVBackend, "_create_compression_subgraph", create_subgraph_and_record)
    model = _compress(_model(), mode, offload_codes=False)
    codes = {op.get_friendly_name(): op.get_data() for op in model.get_ops() if op.get_friendly_name() in WEIGHTS}
    assert len(buffers) == len(WEIGHTS) and None not in buffers
    for name, value in codes.items():
        assert sum(np.shares_memory(value, array) for _, array in buffers) == 1, name
    assert len(returned) == len(WEIGHTS) and all(compressed.tensor is None for compressed in returned)


@READS_PROC_MAPS
def test_large_codes_live_in_deleted_mapped_files_that_stay_valid_as_long_as_the_model(tmp_path):
    model = _compress(_model(), offload_dir=tmp_path)
    values = constants(model)
    files = _mapped_files()
    assert len(files) == 1 and files[0].endswith("(deleted)"), files  # "big" only: "small" is under MIN_BYTES
    gc.collect()
    np.testing.assert_array_equal(constants(model)["big"], values["big"])  # the mapping outlives the transform
    ov.save_model(model, tmp_path / "saved" / "model.xml")
    del model, values
    gc.collect()
    assert _mapped_files() == []  # released with the model: the file's blocks are freed
    saved = ov.Core().read_model(tmp_path / "saved" / "model.xml")
    assert constant_types(saved)["big"] == ov.Type.u4


@READS_PROC_MAPS
@pytest.mark.parametrize("mode", [CompressWeightsMode.INT8_ASYM, CompressWeightsMode.INT8_SYM])
def test_eight_bit_codes_are_written_straight_into_a_mapped_file(monkeypatch, tmp_path, mode):
    """The solver writes large 8-bit codes into a file OpenVINO maps: no copy is saved to a file afterwards."""
    expected = constants(_compress(_model(), mode, offload_codes=False))

    def not_called(*args, **kwargs):
        raise AssertionError("8-bit codes saved after they were computed")

    monkeypatch.setattr(nncf_hqq.codes_offload.ov, "save_model", not_called)
    model = _compress(_model(), mode, offload_dir=tmp_path)
    files = _mapped_files()
    assert len(files) == 1 and files[0].endswith("(deleted)"), files  # "big" only
    gc.collect()
    for name, value in _named(constants(model)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert list(tmp_path.iterdir()) == []
    del model
    gc.collect()
    assert _mapped_files() == []


@READS_PROC_MAPS
def test_a_model_with_eight_and_four_bit_codes_has_the_constants_of_the_one_in_memory(tmp_path):
    """NNCF's defaults keep one weight 8-bit (written into its file by the solver), the others 4-bit (moved)."""
    shapes = {"first": (2048, 1024), "mid": (1024, 2048), "last": (2048, 1024)}

    def compress(**advanced) -> ov.Model:
        model = linear_model(
            {name: heavy_tailed_weight(shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
        )
        params = AdvancedCompressionParameters(**advanced)
        return compress_weights(
            model, mode=CompressWeightsMode.INT4_ASYM, group_size=64, hqq=True, advanced_parameters=params
        )

    in_memory, offloaded = compress(offload_codes=False), compress(offload_dir=tmp_path)
    types = {name: constant_types(offloaded)[name] for name in shapes}
    assert sorted(types.values(), key=str) == sorted([ov.Type.u4, ov.Type.u4, ov.Type.u8], key=str), types
    assert len(_mapped_files()) == len(shapes)
    expected = constants(in_memory)
    for name, value in _named(constants(offloaded)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@READS_PROC_MAPS
def test_eight_bit_codes_whose_constant_was_not_found_after_its_subgraph_still_get_their_file(monkeypatch, tmp_path):
    """A codes constant `after_subgraph` cannot find (as if NNCF named it otherwise) is adopted after the transform."""
    expected = constants(_compress(_model(), CompressWeightsMode.INT8_ASYM, offload_codes=False))
    monkeypatch.setattr(nncf_hqq.compression_session, "node_under", lambda *args: None)
    model = _compress(_model(), CompressWeightsMode.INT8_ASYM, offload_dir=tmp_path)
    gc.collect()
    assert len(_mapped_files()) == 1
    for name, value in _named(constants(model)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@READS_PROC_MAPS
def test_eight_bit_codes_stay_in_memory_with_one_warning_when_the_file_cannot_be_reserved(
    monkeypatch, tmp_path, caplog
):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nncf_hqq.codes_offload.os, "posix_fallocate", no_space)
    expected = constants(_compress(_model(), CompressWeightsMode.INT8_ASYM, offload_codes=False))
    model = _compress(_model(), CompressWeightsMode.INT8_ASYM, offload_dir=tmp_path)
    for name, value in _named(constants(model)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    warnings = [r for r in caplog.records if "stay in memory" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
    assert _mapped_files() == [] and list(tmp_path.iterdir()) == []


@READS_PROC_MAPS
@pytest.mark.parametrize("advanced", ["none", "nncf"])
def test_codes_are_offloaded_by_default_without_nncf_hqq_parameters(advanced):
    """Without advanced parameters, or with NNCF's own class, the codes go to mapped files as with nncf-hqq's."""
    parameters = None if advanced == "none" else nncf.AdvancedCompressionParameters()
    model = compress_weights(
        _model(), mode=CompressWeightsMode.INT4_ASYM, group_size=64, all_layers=True, hqq=True,
        advanced_parameters=parameters,
    )  # fmt: skip
    assert len(_mapped_files()) == 1
    del model
    gc.collect()
    assert _mapped_files() == []


@READS_PROC_MAPS
def test_without_offload_nothing_is_mapped(tmp_path):
    model = _compress(_model(), offload_codes=False, offload_dir=tmp_path)
    assert _mapped_files() == [] and list(tmp_path.iterdir()) == []
    assert constant_types(model)["big"] == ov.Type.u4


def test_a_directory_that_cannot_be_written_keeps_the_codes_in_memory_with_one_warning(monkeypatch, tmp_path, caplog):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nncf_hqq.codes_offload.ov, "save_model", no_space)  # files written after the subgraph
    monkeypatch.setattr(nncf_hqq.codes_offload.os, "posix_fallocate", no_space)  # files the solver writes into
    expected = constants(_compress(_model(), offload_codes=False))
    model = _compress(_model(), offload_dir=tmp_path)
    for name, value in _named(constants(model)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    warnings = [r for r in caplog.records if "stay in memory" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "advanced",
    [{"offload_codes": 1}, {"offload_codes": "yes"}, {"offload_dir": "/nonexistent/nncf_hqq"}, {"offload_dir": 3}],
)
def test_invalid_offload_parameters_raise_validation_error_naming_the_field(advanced):
    field = next(iter(advanced))
    with pytest.raises(nncf.ValidationError, match=f"AdvancedCompressionParameters.{field}"):
        _compress(_model(), **advanced)
