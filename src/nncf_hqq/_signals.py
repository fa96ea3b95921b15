"""Interrupting compiled kernels safely."""

import contextlib
import signal
import threading
from collections.abc import Iterator

_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """
    SIGINT and SIGTERM taken for the block only as a note, and raised again once it ends (so their handlers, e.g.
    Python's KeyboardInterrupt, run then). A KeyboardInterrupt raised while numba's compiled kernel was running
    crashed the process (a segmentation fault, or a SystemError from numba's dispatcher); after the kernel it is an
    ordinary exception. Only in the main thread (where Python runs signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in _DEFERRED}
    for signum in _DEFERRED:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
