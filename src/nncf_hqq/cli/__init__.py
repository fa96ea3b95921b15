"""
The user-facing layer: the `nncf-hqq` command (`main`), the pipeline from a model source to an optimum-intel model
directory (`pipeline`), the export of Hugging Face and GGUF sources to OpenVINO (`export`) and the per-layer
report of a compressed model (`report`).
"""

from nncf_hqq.cli.main import build_parser
from nncf_hqq.cli.main import main

__all__ = ["build_parser", "main"]
