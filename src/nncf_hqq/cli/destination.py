"""
The output directory's safety: nothing the user did not ask to replace is lost, nothing half-written is left
(the output is written aside and moved into place when complete).
"""

import errno
import os
import shutil
from pathlib import Path

import nncf

from nncf_hqq.cli.export import ModelSource
from nncf_hqq.cli.metadata import METADATA_FILE
from nncf_hqq.cli.metadata import is_nncf_hqq_output
from nncf_hqq.cli.workdirs import OWNER_FILE
from nncf_hqq.cli.workdirs import make_temporary_dir


def check_cache_outside_source(cache_dir: Path, source: ModelSource) -> None:
    """An export cache inside a Hugging Face model directory would write into --src: refused."""
    if source.kind == "openvino" or not source.path.is_dir():
        return
    cache, src = cache_dir.absolute().resolve(), source.path.absolute().resolve()
    if cache == src or src in cache.parents:
        raise nncf.ValidationError(f"--cache-dir {cache_dir} is inside --src {source.path}: choose a cache outside it.")


def check_destination(dst: Path, overwrite: bool, protected: dict[str, Path]) -> None:
    """Raises nncf.ValidationError if writing `dst` could lose anything the user did not ask to replace."""
    if dst.exists() and not dst.is_dir():
        raise nncf.ValidationError(f"--dst {dst} is a file: give a directory.")
    resolved = dst.resolve()
    for option, path in protected.items():
        other = Path(path).absolute().resolve()
        if resolved == other or resolved in other.parents or other in resolved.parents:
            raise nncf.ValidationError(f"--dst {dst} overlaps {option} {path}: choose another output directory.")
    if not dst.is_dir() or not any(dst.iterdir()):
        return
    if not overwrite:
        raise nncf.ValidationError(f"--dst {dst} exists and is not empty: choose another directory or --overwrite.")
    if not is_nncf_hqq_output(dst):
        msg = (
            f"--dst {dst} is not empty and is not an nncf-hqq output ({METADATA_FILE} missing): --overwrite replaces "
            "only those; choose another directory."
        )
        raise nncf.ValidationError(msg)


def move_into_place(partial: Path, dst: Path, overwrite: bool) -> None:
    """
    Moves `partial` to `dst`. A `dst` that appeared meanwhile is not replaced unless `overwrite` (it has been
    checked to be an earlier output); a replaced `dst` is removed only once the new one is in place.
    """
    (partial / OWNER_FILE).unlink()
    if not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        try:
            os.rename(partial, dst)  # fails on a non-empty directory: never replaces one
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise nncf.ValidationError(f"--dst {dst} appeared while compressing: nothing was replaced.") from None
            raise
        return
    if not overwrite or not is_nncf_hqq_output(dst):
        raise nncf.ValidationError(f"--dst {dst} appeared while compressing: nothing was replaced.")
    previous = make_temporary_dir(dst.parent, f".{dst.name}.previous-")
    os.replace(dst, previous / "output")
    try:
        os.rename(partial, dst)
    except BaseException:
        os.replace(previous / "output", dst)
        raise
    finally:
        if dst.exists():
            shutil.rmtree(previous, ignore_errors=True)
