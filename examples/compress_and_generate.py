"""
End to end on the bundled model: SmolLM2-135M-Instruct -> HQQ INT4 (and NNCF RTN INT4 for comparison)
-> generate text with optimum-intel -> compare weight error and the next-token loss on a short text.

    python examples/compress_and_generate.py --out-dir outputs/example
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from optimum.intel import OVModelForCausalLM
from transformers import AutoTokenizer

from nncf_hqq.cli.pipeline import METADATA_FILE
from nncf_hqq.cli.pipeline import CompressionOptions
from nncf_hqq.cli.pipeline import compress_llm

PROMPT = "The capital of France is"
TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
)


def mean_token_loss(model_dir: Path, text: str) -> float:
    """Mean next-token cross-entropy of `text` (one window, no special tokens)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = OVModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return float(torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:]))


def generate(model_dir: Path, prompt: str, max_new_tokens: int = 24) -> str:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = OVModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/example"))
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "nncf_hqq")
    args = parser.parse_args()

    results = {}
    for method in ("rtn", "hqq"):
        dst = args.out_dir / f"smollm2-{method}-int4"
        metadata = compress_llm(None, dst, CompressionOptions(method=method), overwrite=True, cache_dir=args.cache_dir)
        results[method] = {
            "mean_relative_weight_error": metadata["mean_relative_error"],
            "compression_seconds": metadata["compression_seconds"],
            "loss_on_text": mean_token_loss(dst, TEXT),
            "generation": generate(dst, PROMPT),
        }
        assert json.loads((dst / METADATA_FILE).read_text())["method"] == method
    for method, r in results.items():
        print(
            f"[{method}] weight error {r['mean_relative_weight_error']:.5f}, loss {r['loss_on_text']:.4f}, "
            f"{r['compression_seconds']:.1f} s\n  {r['generation']!r}"
        )
    ratio = results["hqq"]["mean_relative_weight_error"] / results["rtn"]["mean_relative_weight_error"]
    print(
        f"HQQ/RTN weight error: {ratio:.3f} (HQQ weighs each weight's error by its activations, RTN's is plain); "
        "loss difference HQQ - RTN: "
        f"{results['hqq']['loss_on_text'] - results['rtn']['loss_on_text']:+.4f} (one short text: not a benchmark)"
    )
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    if not np.isfinite(results["hqq"]["loss_on_text"]):
        raise SystemExit("HQQ model produced non-finite logits")


if __name__ == "__main__":
    main()
