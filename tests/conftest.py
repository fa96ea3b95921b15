"""
Session fixtures: the bundled model is exported to OpenVINO once and shared by the tests that need it; a tiny
random Llama (as a Hugging Face directory and exported once) serves the tests of the command's file handling.
"""

from pathlib import Path

import pytest

from nncf_hqq import cli


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Export cache shared by the tests: the bundled model is exported to OpenVINO once per session."""
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="session")
def bundled_hqq(cache_dir, tmp_path_factory) -> Path:
    """`nncf-hqq compress` with no --src: the bundled SmolLM2-135M-Instruct, HQQ INT4."""
    dst = tmp_path_factory.mktemp("out") / "smollm2-hqq"
    assert cli.main(["compress", "--dst", str(dst), "--cache-dir", str(cache_dir)]) == 0
    return dst


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama saved as a Hugging Face directory (no tokenizer)."""
    import torch
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_ir_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama exported to an fp16 optimum-intel IR directory (what `--src` takes for an IR)."""
    from nncf_hqq.cli.export import full_precision_ir
    from nncf_hqq.cli.export import resolve_source

    return full_precision_ir(resolve_source(tiny_llama_dir), tmp_path_factory.mktemp("tiny-export")).parent
