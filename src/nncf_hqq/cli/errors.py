"""
The one place that turns expected failures of the command into a one-line message and an exit code.

Expected failures are the user's to fix: bad arguments and inputs (NNCF's validation errors, raised by nncf-hqq
too for unreadable sources), file-system problems (missing or read-only paths, a full disk), and interruptions.
Anything else is a bug: it keeps its traceback, with a line saying so.
"""

import errno
import re
import shutil
from pathlib import Path

import nncf
import openvino as ov

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

USER_ERRORS = (
    nncf.ValidationError,
    nncf.UnsupportedBackendError,
    nncf.InvalidGroupSizeError,
    nncf.ParameterNotSupportedError,
    nncf.UnsupportedModelError,
    nncf.UnsupportedDatasetError,
)

_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another directory",
    errno.EFBIG: "the file grew beyond what this system allows: choose another directory",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another directory",
    errno.EROFS: "the file system is read-only: choose a writable directory",
    errno.EACCES: "permission denied: choose a directory you can write to",
    errno.EPERM: "operation not permitted: choose a directory you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "the path exists and is not a directory",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "the path is a directory, not a file",
    errno.ENAMETOOLONG: "the path is too long",
}


def interrupted(error: BaseException) -> bool:
    """Whether `error` is, or was caused by, a KeyboardInterrupt (the compiled solver turns one into a SystemError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def user_message(error: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for a bug."""
    if isinstance(error, USER_ERRORS):
        return _one_line(str(error))
    if isinstance(error, OSError) and error.errno is not None:
        hint = _ERRNO_HINTS.get(error.errno, error.strerror or "")
        where = f"{error.filename}: " if error.filename else ""
        return _one_line(f"{where}{hint}")
    return None


def openvino_reason(error: BaseException) -> str:
    """The part of an OpenVINO exception message a user can act on, without the C++ source locations."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = re.sub(r"Exception from \S+:\d+:\s*", "", text)
    text = re.sub(r"Check '.*?' failed at \S+:\d+:\s*", "", text)
    return text.strip() or type(error).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def save_model(model: ov.Model, xml_file: Path) -> None:
    """`ov.save_model`, whose write failures (OpenVINO's "iostream error") become an OSError naming the file."""
    try:
        ov.save_model(model, xml_file)
    except RuntimeError as error:
        free = shutil.disk_usage(xml_file.parent).free
        code = errno.ENOSPC if free < 64 * 2**20 else errno.EIO
        reason = "the disk is full" if code == errno.ENOSPC else openvino_reason(error)
        message = f"could not write the model ({reason}): check free space and quotas"
        raise OSError(code, message, str(xml_file)) from None
