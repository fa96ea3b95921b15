"""HQQ (Half-Quadratic Quantization) for NNCF's data-free weight compression of OpenVINO models."""

from nncf_hqq.compress import compress_weights
from nncf_hqq.hqq import HQQ
from nncf_hqq.parameters import AdvancedCompressionParameters
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage

__all__ = [
    "HQQ",
    "AdvancedCompressionParameters",
    "AdvancedHQQParameters",
    "HQQZeroPointStorage",
    "compress_weights",
]
