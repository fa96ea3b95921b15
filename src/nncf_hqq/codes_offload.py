"""
The integer codes of compressed weights kept in files that OpenVINO maps, instead of in the process's memory.

NNCF's transform holds the whole compressed model in memory until the caller saves it: the codes are a quarter of
an f16 model in 4 bits, half in 8 bits. Each codes constant of at least `MIN_BYTES` is written to a file of its
own as a one-constant IR and read back with OpenVINO, which maps the file read-only and keeps the mapping alive as
long as a constant uses it; the file is deleted at once (POSIX systems free its blocks when the mapping goes). Its
pages are then the kernel's file cache: written back, dropped under memory pressure, read again when the model is
saved or compiled. Values, element types and names are unchanged.

8-bit codes, which the solver writes in the layout of their constant, go to such a file from the start
(`codes_buffer`): the solver writes them into a writable mapping of a file that OpenVINO has already mapped, and
`move` then gives the constant the file's own node, so that they never occupy the process's memory (NNCF
compresses a weight in one piece: an 8-bit lm_head's codes are 136 MB on a 0.5B model).
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
from nncf.common.logging import nncf_logger
from nncf.tensor import Tensor
from openvino import opset13 as opset

from nncf_hqq.openvino_graph import are_eight_bit_codes
from nncf_hqq.openvino_graph import are_packed_four_bit_codes
from nncf_hqq.openvino_graph import codes_buffer

MIN_BYTES = 2**20  # smaller constants stay in memory: a file each would cost more than it saves


class CodesOffload:
    """
    Moves codes constants into mapped files (`move`), or gives 8-bit codes a mapped file to be written into
    (`codes_buffer`), in a private directory under `directory` (the system's temporary directory when None). If a
    file cannot be written (no space, no permission), that constant and the later ones stay in memory and one
    warning says why.
    """

    def __init__(self, directory: str | Path | None = None):
        self._parent = directory
        self._dir: Path | None = None
        self._count = 0
        self._failed = False
        self._core = ov.Core()
        self._premapped: dict[int, ov.Node] = {}  # data address -> the mapped Constant that owns it

    def codes_buffer(
        self, element_type: ov.Type, shape: tuple[int, ...], dtype: type
    ) -> tuple[Tensor, np.ndarray] | None:
        """
        Memory for codes as `openvino_graph.codes_buffer` gives it, but in a mapped file when the codes have at least
        `MIN_BYTES` and the system can reserve the file's blocks: a Tensor viewing OpenVINO's read-only mapping (for
        NNCF's constant) and a writable numpy mapping of the same file (for the solver; 4-bit codes two a byte). The
        view does not own the mapping: `move` must replace the constant NNCF makes from it, before `close`.
        """
        if are_eight_bit_codes(element_type, dtype):
            size, writable_dtype = int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype
        elif are_packed_four_bit_codes(element_type, shape):
            size, writable_dtype = int(np.prod(shape)) // 2, np.uint8
        else:
            return None
        if self._failed or size < MIN_BYTES or not hasattr(os, "posix_fallocate"):
            return codes_buffer(element_type, shape, dtype)
        try:
            mapped, writable = self._map_empty_file(element_type, shape, writable_dtype, size)
        except (OSError, RuntimeError) as error:
            self._fail(error)
            return codes_buffer(element_type, shape, dtype)
        view = mapped.get_tensor_view()
        self._premapped[_address(view)] = mapped
        return Tensor(view), writable

    def move(self, const: ov.Node) -> ov.Node:
        """
        A Constant with the value, type and friendly name of `const`, backed by a mapped file, that every consumer
        of `const` reads instead; `const` itself when it is small or a file cannot be written.
        """
        mapped = self._premapped.pop(_address(const.get_tensor_view()), None) if self._premapped else None
        if mapped is None:
            if self._failed or const.get_byte_size() < MIN_BYTES:
                return const
            try:
                mapped = self._write_and_map(const)
            except (OSError, RuntimeError) as error:
                self._fail(error)
                return const
        mapped.set_friendly_name(const.get_friendly_name())
        mapped.output(0).get_tensor().set_names(set(const.output(0).get_names()))  # not the one-constant IR's
        for target in list(const.output(0).get_target_inputs()):
            target.replace_source_output(mapped.output(0))
        return mapped

    def adopt_remaining(self, model: ov.Model) -> None:
        """
        Gives every constant of `model` that views a `codes_buffer` file not yet taken by `move` the file's own
        node (none is left when each codes constant reached `move`; this keeps a missed one from outliving its
        mapping at `close`).
        """
        if not self._premapped:
            return
        for op in model.get_ordered_ops():
            if op.get_type_name() == "Constant" and _address(op.get_tensor_view()) in self._premapped:
                self.move(op)

    def _fail(self, error: Exception) -> None:
        self._failed = True
        nncf_logger.warning(f"Compressed weights stay in memory: cannot write them under {self._parent}: {error}")

    def _new_file_stem(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="nncf_hqq_codes_", dir=self._parent))
        self._count += 1
        return self._dir / str(self._count - 1)

    def _map_empty_file(
        self, element_type: ov.Type, shape: tuple[int, ...], dtype: type, size: int
    ) -> tuple[ov.Node, np.memmap]:
        """
        A Constant of `element_type` and `shape` that OpenVINO maps from a new file of `size` reserved bytes, and a
        writable map of the file as `dtype` (its `shape`, or flat bytes for 4-bit codes).
        """
        xml = self._new_file_stem().with_suffix(".xml")
        data = xml.with_suffix(".bin")
        try:
            descriptor = os.open(data, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, size)  # a full disk fails here, not as SIGBUS in the solver
            finally:
                os.close(descriptor)
            xml.write_text(_one_constant_ir(element_type, shape, size))
            (mapped,) = [op for op in self._core.read_model(xml).get_ordered_ops() if op.get_type_name() == "Constant"]
            flat = element_type in (ov.Type.u4, ov.Type.i4)
            writable = np.memmap(data, dtype=dtype, mode="r+", shape=(size,) if flat else shape)
        finally:
            _remove_quietly(xml, data)
        return mapped, writable

    def _write_and_map(self, const: ov.Node) -> ov.Node:
        xml = self._new_file_stem().with_suffix(".xml")
        view = opset.constant(const.get_tensor_view(), shared_memory=True)  # not a consumer of `const`
        try:
            ov.save_model(ov.Model([opset.result(view)], []), xml, compress_to_fp16=False)
            model = self._core.read_model(xml)  # maps the .bin
        finally:
            _remove_quietly(xml, xml.with_suffix(".bin"))
        (mapped,) = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
        return mapped

    def close(self) -> None:
        """
        Removes the private directory (its files are already deleted where the system allows it) and forgets the
        mapped files of `codes_buffer` that no constant took.
        """
        self._premapped.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _remove_quietly(*paths: Path) -> None:
    """Deletes the files; where a mapped file cannot be deleted (Windows), it goes with the directory at `close`."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _address(tensor: ov.Tensor) -> int:
    return tensor.data.ctypes.data


def _one_constant_ir(element_type: ov.Type, shape: tuple[int, ...], size: int) -> str:
    """An IR whose only Constant, of `element_type` and `shape`, is the first `size` bytes of its .bin file."""
    dims = "".join(f"<dim>{d}</dim>" for d in shape)
    port = f'<port id="0" precision="{element_type.get_type_name().upper()}">{dims}</port>'
    const = (
        f'<data element_type="{element_type.get_type_name()}" shape="{",".join(map(str, shape))}" offset="0"'
        f' size="{size}"/>'
    )
    return (
        '<?xml version="1.0"?>\n<net name="codes" version="11"><layers>'
        f'<layer id="0" name="codes" type="Const" version="opset1">{const}<output>{port}</output></layer>'
        f'<layer id="1" name="result" type="Result" version="opset1"><input>{port}</input></layer>'
        '</layers><edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/></edges></net>\n'
    )
