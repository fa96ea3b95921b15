"""
Tiny random causal LMs of the families optimum-intel exports (hidden size 64, 2 layers, 4 query heads), built
from Transformers' config classes alone (no hub), with norm scales spread as trained ones are.

Between them: tied embeddings (qwen2, gemma*, cohere, gpt2, bloom, opt), biases (qwen2, stablelm, gpt_neox, opt,
bloom, starcoder2, falcon off), grouped query attention with 1 (qwen3, gemma), 2 or all 4 key/value heads,
parallel attention and MLP blocks (stablelm, falcon, gpt_neox, cohere), fused q/k/v or gate/up projections
(phi3, gpt_neox, bloom, falcon), non-parametric norms (olmo), norms after the blocks (olmo2, gemma2/3) and
GPT-2's Conv1D layout.
"""

from pathlib import Path

SIZES = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=128)  # fmt: skip
# family -> (config class, model class, extra config arguments)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=1, head_dim=16)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_key_value_heads=4, sliding_window=None)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(num_key_value_heads=1, head_dim=16)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(num_key_value_heads=2, head_dim=16, sliding_window=64)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(num_key_value_heads=2, head_dim=16, sliding_window=64)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(num_key_value_heads=2, pad_token_id=0)),
    "stablelm": (
        "StableLmConfig",
        "StableLmForCausalLM",
        dict(num_key_value_heads=4, use_qkv_bias=True, use_parallel_residual=True, pad_token_id=0),
    ),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", dict(num_key_value_heads=4, pad_token_id=0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(num_key_value_heads=4, pad_token_id=0)),
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(num_key_value_heads=2)),
    "falcon": (
        "FalconConfig",
        "FalconForCausalLM",
        dict(new_decoder_architecture=True, num_kv_heads=2, parallel_attn=True, bias=False),
    ),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(use_parallel_residual=True)),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(ffn_dim=96, word_embed_proj_dim=64, pad_token_id=1)),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(n_layer=2, n_head=4)),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(num_key_value_heads=2, sliding_window=None)),
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(num_key_value_heads=2, pad_token_id=0)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=128)),
}


def save_tiny_model(family: str, path: Path) -> Path:
    """Saves a tiny random model of `family` as a Hugging Face directory (no tokenizer); returns `path`."""
    import torch
    import transformers

    config_name, model_name, extra = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**{**SIZES, **extra})
    model = getattr(transformers, model_name)(config).eval()
    generator = torch.Generator().manual_seed(1)
    for name, parameter in model.named_parameters():
        if "norm" in name or ".ln" in name:  # norm scales away from 1, as trained ones are
            parameter.data = torch.rand(parameter.shape, generator=generator) * 1.5 + 0.25
    model.save_pretrained(path)
    return path
