"""What the command shows while it works: one line per step, and third-party chatter kept out of the way."""

import functools
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import nncf

THIRD_PARTY_LOGGERS = ("transformers", "optimum", "accelerate", "torch", "huggingface_hub", "datasets")
_quiet = [False]  # inside `quiet_third_party`


@contextmanager
def step(message: str) -> Iterator[None]:
    """Shows `message` with a spinner while the block runs, then the message with its duration."""
    from rich.console import Console

    console = Console(stderr=True)
    start = time.perf_counter()
    with console.status(message):
        yield
    console.print(f"[green]✓[/green] {message} ({time.perf_counter() - start:.1f} s)")


def warn(message: str) -> None:
    """A warning for the user of the command, on stderr."""
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]nncf-hqq: warning:[/yellow] {message}", highlight=False)


@contextmanager
def quiet_third_party(verbose: bool = False) -> Iterator[None]:
    """
    For the block, unless `verbose`: Python warnings ignored, the loggers of transformers, optimum, torch and
    friends at ERROR, NNCF at WARNING (no statistics tables), and transformers' progress bars off where the export
    runs (`transformers_progress_bars_off`). Restored after.
    """
    if verbose:
        yield
        return
    loggers = {name: logging.getLogger(name) for name in THIRD_PARTY_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    nncf_level = logging.getLogger("nncf").level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for logger in loggers.values():
                logger.setLevel(logging.ERROR)
            nncf.set_log_level(logging.WARNING)
            _quiet[0] = True
            yield
    finally:
        _quiet[0] = False
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        nncf.set_log_level(nncf_level or logging.INFO)


@contextmanager
def transformers_quiet() -> Iterator[None]:
    """
    Inside `quiet_third_party`: transformers' and huggingface_hub's messages below ERROR and progress bars (also
    plain tqdm ones) off for the block (transformers sets its own level when it is first imported, so this imports it).
    """
    if not _quiet[0]:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    hub_bars = not hub_utils.are_progress_bars_disabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    import transformers.modeling_gguf_pytorch_utils as gguf_loading

    gguf_tqdm = getattr(gguf_loading, "tqdm", None)  # a plain tqdm bar while GGUF tensors are dequantized
    if gguf_tqdm is not None:
        gguf_loading.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_loading.tqdm = gguf_tqdm
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()
