"""
Opt-in `hqq` support for code that calls `nncf.compress_weights`, such as optimum-intel:

    import nncf_hqq
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    with nncf_hqq.hqq_enabled():
        model = OVModelForCausalLM.from_pretrained(
            model_id, export=True, quantization_config=OVWeightQuantizationConfig(bits=4, group_size=64, hqq=True)
        )

optimum-intel passes unknown `OVWeightQuantizationConfig` keyword arguments through to `nncf.compress_weights`;
while enabled, `nncf.compress_weights` is `nncf_hqq.compress_weights`, which is NNCF's function for calls without
`hqq`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import nncf

from nncf_hqq.compress import compress_weights
from nncf_hqq.compress import nncf_compress_weights


def enable() -> None:
    """Makes `nncf.compress_weights` accept `hqq` (until `disable()`)."""
    nncf.compress_weights = compress_weights


def disable() -> None:
    """Restores NNCF's own `nncf.compress_weights`."""
    nncf.compress_weights = nncf_compress_weights


def is_enabled() -> bool:
    return nncf.compress_weights is compress_weights


@contextmanager
def hqq_enabled() -> Iterator[None]:
    """`enable()` for the duration of a `with` block, then the previous state again."""
    was_enabled = is_enabled()
    enable()
    try:
        yield
    finally:
        if not was_enabled:
            disable()
