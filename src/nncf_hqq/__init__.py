"""HQQ (Half-Quadratic Quantization) for NNCF's data-free weight compression of OpenVINO models."""

from nncf_hqq.compress import compress_weights
from nncf_hqq.equalization.parameters import ActivationEstimate
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.equalization.parameters import EqualizationMethod
from nncf_hqq.hqq import HQQ
from nncf_hqq.opt_in import disable
from nncf_hqq.opt_in import enable
from nncf_hqq.opt_in import hqq_enabled
from nncf_hqq.opt_in import is_enabled
from nncf_hqq.parameters import AdvancedCompressionParameters
from nncf_hqq.parameters import AdvancedHQQParameters
from nncf_hqq.parameters import HQQZeroPointStorage

__all__ = [
    "HQQ",
    "ActivationEstimate",
    "AdvancedCompressionParameters",
    "AdvancedEqualizationParameters",
    "AdvancedHQQParameters",
    "EqualizationMethod",
    "HQQZeroPointStorage",
    "compress_weights",
    "disable",
    "enable",
    "hqq_enabled",
    "is_enabled",
]
