"""The `nncf-hqq` command: compress an LLM to an HQQ INT4/INT8 OpenVINO model, and try it."""

import argparse
import os
import signal
import sys
from pathlib import Path

import nncf

from nncf_hqq.cli.console import quiet_third_party
from nncf_hqq.cli.errors import EXIT_INTERRUPTED
from nncf_hqq.cli.errors import EXIT_USER_ERROR
from nncf_hqq.cli.errors import interrupted
from nncf_hqq.cli.errors import user_message
from nncf_hqq.cli.options import CompressionOptions
from nncf_hqq.cli.pipeline import compress_llm
from nncf_hqq.equalization.parameters import AdvancedEqualizationParameters
from nncf_hqq.equalization.parameters import EqualizationMethod
from nncf_hqq.parameters import HQQZeroPointStorage

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "nncf_hqq"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other error of the command."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"nncf-hqq: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nncf-hqq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compress = commands.add_parser(
        "compress",
        help="compress an LLM (OpenVINO IR, Hugging Face directory or GGUF) into an optimum-intel model directory",
    )
    compress.add_argument("--src", help="model to compress; default: the bundled SmolLM2-135M-Instruct")
    compress.add_argument("--dst", required=True, type=Path, help="output directory (created; never half-written)")
    compress.add_argument("--method", choices=["hqq", "rtn"], default="hqq", help="rtn: NNCF's round-to-nearest")
    compress.add_argument("--bits", type=int, choices=[4, 8], default=4)
    compress.add_argument("--group-size", type=int, choices=[32, 64, 128, -1], help="default: 64 (4 bits), -1 (8)")
    compress.add_argument("--sym", action="store_true", help="symmetric quantization (no zero point)")
    compress.add_argument("--ratio", type=float, default=1.0, help="share of 4-bit layers (the rest INT8)")
    compress.add_argument("--awq", action="store_true", help="data-free AWQ before compression")
    compress.add_argument("--keep-lm-head-fp16", action="store_true", help="leave the output projection uncompressed")
    compress.add_argument(
        "--zero-point", choices=[s.value for s in HQQZeroPointStorage], default="int", help="HQQ zero point storage"
    )
    compress.add_argument(
        "--iterations",
        type=int,
        help="HQQ solver iterations from RTN's parameters, 0: RTN's parameters (default: 1 asymmetric, 20 symmetric)",
    )
    compress.add_argument(
        "--patience",
        type=int,
        help="a group's HQQ iterations stop after this many that did not lower its error, 0: never (default: 2)",
    )
    compress.add_argument(
        "--equalization",
        choices=[e.value for e in EqualizationMethod],
        help=f"HQQ equalization of input channels (default: {AdvancedEqualizationParameters().method.value})",
    )
    compress.add_argument(
        "--calibration",
        default="none",
        metavar="{none,self,FILE}",
        help="the activations that weigh HQQ's error: none (random token ids, the default), self (text the model "
        "writes itself first), or FILE (a UTF-8 text file)",
    )
    compress.add_argument("--seed", type=_seed, default=0, help="seed of every random generator, 0 to 2^32 - 1")
    compress.add_argument("--overwrite", action="store_true", help="replace a non-empty --dst")
    compress.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="cache of full-precision exports")

    generate = commands.add_parser("generate", help="generate text with a model directory")
    generate.add_argument("model_dir", type=Path)
    generate.add_argument("prompt")
    generate.add_argument("--max-new-tokens", type=int, default=48)
    for command in (compress, generate):
        command.add_argument("--verbose", action="store_true", help="show NNCF's statistics and third-party logs")
        command.add_argument("--debug", action="store_true", help="print tracebacks (also NNCF_HQQ_DEBUG=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Runs the command. Expected failures print one line, `nncf-hqq: error: ...`, and return 2; an interruption
    (Ctrl-C, SIGTERM) returns 130; both leave nothing half-written. Other exceptions are bugs: traceback kept.
    """
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("NNCF_HQQ_DEBUG") == "1"
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with quiet_third_party(args.verbose):
            return _compress(args) if args.command == "compress" else _generate(args)
    except BaseException as error:
        if debug:
            raise
        if interrupted(error):
            print("nncf-hqq: interrupted; nothing was written to the destination.", file=sys.stderr)
            return EXIT_INTERRUPTED
        message = user_message(error)
        if message is None:
            print("nncf-hqq: internal error (a bug: please report it with the traceback below).", file=sys.stderr)
            raise
        print(f"nncf-hqq: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^32 - 1], got {value}")
    return value


def _compress(args: argparse.Namespace) -> int:
    options = CompressionOptions(
        method=args.method,
        bits=args.bits,
        group_size=args.group_size,
        sym=args.sym,
        ratio=args.ratio,
        awq=args.awq,
        keep_lm_head_fp16=args.keep_lm_head_fp16,
        zero_point=args.zero_point,
        iterations=args.iterations,
        patience=args.patience,
        equalization=args.equalization,
        calibration=args.calibration,
        seed=args.seed,
    )
    metadata = compress_llm(args.src, args.dst, options, overwrite=args.overwrite, cache_dir=args.cache_dir)
    _print_summary(metadata, args.dst)
    return 0


def _print_summary(metadata: dict, dst: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    size = metadata["model_size_bytes"]
    table = Table(title=f"nncf-hqq: {metadata['source']}", show_header=False)
    parameters = metadata["parameters"]
    method = metadata["method"]
    if parameters.get("equalization") not in (None, "none"):
        method += f", {parameters['equalization']} equalization"
    table.add_row("method", f"{method} ({parameters['mode']}, group size {parameters['group_size']})")
    table.add_row("layers", ", ".join(f"{k}: {v}" for k, v in sorted(metadata["layers_by_precision"].items())))
    table.add_row("mean relative weight error", f"{metadata['mean_relative_error']:.5f}")
    compression = f"{metadata['compression_seconds']:.1f} s"
    calibration = metadata.get("calibration")
    if calibration is not None and calibration["cached"]:
        compression += " (calibration text from the cache)"
    elif calibration is not None:
        compression += f" (of which {calibration['seconds']:.1f} s writing calibration text)"
    table.add_row("compression time", compression)
    table.add_row("model size", f"{size['before'] / 2**20:.1f} MiB -> {size['after'] / 2**20:.1f} MiB")
    table.add_row("output", str(dst))
    Console().print(table)


def _generate(args: argparse.Namespace) -> int:
    if not (args.model_dir / "openvino_model.xml").exists():
        raise nncf.ValidationError(f"{args.model_dir} is not an OpenVINO model directory (no openvino_model.xml).")
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir))
    model = OVModelForCausalLM.from_pretrained(str(args.model_dir))
    inputs = tokenizer(args.prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(tokenizer.decode(output[0], skip_special_tokens=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
