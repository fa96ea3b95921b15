"""
The integer codes of compressed weights kept in files that OpenVINO maps, instead of in the process's memory.

NNCF's transform holds the whole compressed model in memory until the caller saves it: the codes are a quarter of
an f16 model in 4 bits, half in 8 bits. Each codes constant of at least `MIN_BYTES` is written to a file of its
own as a one-constant IR and read back with OpenVINO, which maps the file read-only and keeps the mapping alive as
long as a constant uses it; the file is deleted at once (POSIX systems free its blocks when the mapping goes). Its
pages are then the kernel's file cache: written back, dropped under memory pressure, read again when the model is
saved or compiled. Values, element types and names are unchanged.
"""

import os
import shutil
import tempfile
from pathlib import Path

import openvino as ov
from nncf.common.logging import nncf_logger
from openvino import opset13 as opset

MIN_BYTES = 2**20  # smaller constants stay in memory: a file each would cost more than it saves


class CodesOffload:
    """
    Moves codes constants into mapped files (`move`), in a private directory under `directory` (the system's
    temporary directory when None). If a file cannot be written (no space, no permission), that constant and the
    later ones stay in memory and one warning says why.
    """

    def __init__(self, directory: str | Path | None = None):
        self._parent = directory
        self._dir: Path | None = None
        self._count = 0
        self._failed = False
        self._core = ov.Core()

    def move(self, const: ov.Node) -> ov.Node:
        """
        A Constant with the value, type and friendly name of `const`, backed by a mapped file, that every consumer
        of `const` reads instead; `const` itself when it is small or a file cannot be written.
        """
        if self._failed or const.get_byte_size() < MIN_BYTES:
            return const
        try:
            mapped = self._write_and_map(const)
        except (OSError, RuntimeError) as error:
            self._failed = True
            nncf_logger.warning(f"Compressed weights stay in memory: cannot write them under {self._parent}: {error}")
            return const
        mapped.set_friendly_name(const.get_friendly_name())
        mapped.output(0).get_tensor().set_names(set(const.output(0).get_names()))  # not the one-constant IR's
        for target in list(const.output(0).get_target_inputs()):
            target.replace_source_output(mapped.output(0))
        return mapped

    def _write_and_map(self, const: ov.Node) -> ov.Node:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="nncf_hqq_codes_", dir=self._parent))
        xml = self._dir / f"{self._count}.xml"
        self._count += 1
        view = opset.constant(const.get_tensor_view(), shared_memory=True)  # not a consumer of `const`
        try:
            ov.save_model(ov.Model([opset.result(view)], []), xml, compress_to_fp16=False)
            model = self._core.read_model(xml)  # maps the .bin
        finally:
            _remove_quietly(xml, xml.with_suffix(".bin"))
        (mapped,) = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
        return mapped

    def close(self) -> None:
        """Removes the private directory (its files are already deleted where the system allows it)."""
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
