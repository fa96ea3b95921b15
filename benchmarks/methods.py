"""
The compression methods every benchmark compares, by name, and how a model is compressed with one of them.

Methods are pinned to explicit parameters where they record an experiment, so that they do not follow later
changes of the defaults; `hqq-default`, `hqq-f16zp`, `hqq-offset` and the `*hqq-default` combinations follow them
(`nncf_hqq.compress_weights(..., hqq=True)` as a user calls it).
"""

import dataclasses
import re
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import nncf
import openvino as ov
from nncf.quantization.advanced_parameters import GroupSizeFallbackMode

from nncf_hqq import AdvancedCompressionParameters
from nncf_hqq import AdvancedEqualizationParameters
from nncf_hqq import AdvancedHQQParameters
from nncf_hqq import compress_weights
from nncf_hqq.calibration.parameters import bos_token_id
from nncf_hqq.cli.pipeline import copy_companion_files

FULL_PRECISION = "float"  # the uncompressed model's row (as exported: f16 LLMs, f32 encoders)


@dataclass(frozen=True)
class Method:
    """
    :param name: Registry name.
    :param kwargs: `nncf_hqq.compress_weights` arguments besides mode, group size and dataset; `hqq_params`,
        `equalization_params` and `offload_codes` go into the advanced parameters.
    :param data_aware: Whether the method needs a calibration dataset.
    :param calibration: The dataset a data-aware method is fed: "text" (real text, disjoint from the evaluated),
        "self" (text the uncompressed model wrote, `nncf_hqq.calibration`), "auto" (the text optimum-intel's
        dataset="auto" has it write, `benchmarks.auto_text`) or "random" (32 windows of 128 random token ids after
        BOS, no text; "random4": 4 windows).
    """

    name: str
    kwargs: dict = field(default_factory=dict)
    data_aware: bool = False
    equalize: str | None = None  # experimental: equalization folded into the model before compression
    calibration: str = "text"
    self_params: tuple[tuple[str, object], ...] = ()  # "self" text: `SelfCalibrationParameters` fields changed
    experiment: str | None = None  # experimental compressor: "gram" (`benchmarks.experiments.gram_experiment`)


def _hqq(equalization: str = "none", patience: int | None = None, **hqq_params) -> dict:
    """
    HQQ with these parameters; without equalization, activation moments and running every iteration unless given
    (so that pinned methods stay pinned).
    """
    return {
        "hqq": True,
        "hqq_params": AdvancedHQQParameters(patience=patience, activation_moments=False, **hqq_params),
        "equalization_params": AdvancedEqualizationParameters(method=equalization),
    }


# HQQ's unweighted objective (the data-free default before the random-token moments), pinned
UNWEIGHTED = {"hqq": True, "hqq_params": AdvancedHQQParameters(activation_moments=False)}

METHODS = [
    Method(FULL_PRECISION),
    Method("rtn"),
    # `hqq=True` as a user calls it (power equalization, one HQQ iteration from RTN), and its zero point storages
    Method("hqq-default", {"hqq": True}),
    Method("hqq-unweighted", UNWEIGHTED),
    # the default with more random token windows behind its activation moments (the default: 4)
    *[
        Method(f"hqq-random{n}", {"hqq": True, "hqq_params": AdvancedHQQParameters(random_token_windows=n)})
        for n in (8, 32)
    ],
    Method("hqq-f16zp", {"hqq": True, "hqq_params": AdvancedHQQParameters(zero_point_storage="float16")}),
    Method("hqq-default-in-memory", {"hqq": True, "offload_codes": False}),  # the codes not in mapped files
    # the default without equalization (HQQ alone, its other defaults)
    Method("hqq-noeq", {"hqq": True, "equalization_params": AdvancedEqualizationParameters(method="none")}),
    # mixed precision: a share `ratio` of the weights in 4 bits, the rest INT8 (NNCF's sensitivity ranking)
    *[Method(f"rtn-r{r}", {"ratio": r}) for r in (0.8, 0.5)],
    *[Method(f"hqq-default-r{r}", {"hqq": True, "ratio": r}) for r in (0.8, 0.5)],
    Method("hqq-offset", {"hqq": True, "hqq_params": AdvancedHQQParameters(zero_point_storage="offset")}),
    # equalization (nncf_hqq.equalization) without and with HQQ, pinned
    Method("rtn+eq-power", _hqq(equalization="power", scale_search_steps=0, num_iterations=0)),
    Method("rtn+eq-sinkhorn", _hqq(equalization="sinkhorn", scale_search_steps=0, num_iterations=0)),
    Method("hqq-eq-power-nosearch", _hqq(equalization="power", scale_search_steps=0, num_iterations=1)),
    Method("hqq-eq-power-nosearch-sym20", _hqq(equalization="power", scale_search_steps=0)),  # 20 iterations in sym
    *[
        Method(f"hqq-eq-power-nosearch-it{n}", _hqq(equalization="power", scale_search_steps=0, num_iterations=n))
        for n in (3, 5, 10)
    ],
    # 20 iterations in sym with each group stopping after k iterations that did not lower its error
    *[
        Method(f"hqq-eq-power-nosearch-sym20-p{k}", _hqq(equalization="power", scale_search_steps=0, patience=k))
        for k in (1, 2)
    ],
    Method("hqq-eq-sinkhorn", _hqq(equalization="sinkhorn", scale_search_steps=0, num_iterations=1)),
    Method("hqq-eq-power-search", _hqq(equalization="power", scale_search_steps=7, num_iterations=1)),
    # HQQ without equalization: hqq-u4 is the scale search (7 expansions) and one iteration
    Method("hqq-u4", _hqq(scale_search_steps=7, num_iterations=1)),
    Method("hqq-u4-nosearch", _hqq(scale_search_steps=0, num_iterations=1)),
    Method("hqq-u4-f16zp", _hqq(zero_point_storage="float16", scale_search_steps=7)),
    Method("hqq-u4-offset", _hqq(zero_point_storage="offset", scale_search_steps=7)),
    Method("hqq-u4-rtn20", _hqq(scale_search_steps=0, num_iterations=20)),
    Method("hqq-u4-clip", _hqq(scale_search_steps=0, num_iterations=20, clip_extremes=True)),
    Method("hqq-u4-steps15", _hqq(scale_search_steps=15)),
    Method("hqq-u4-norm", _hqq(norm_importance=True, scale_search_steps=15)),
    # data-free AWQ, and data-aware methods for reference
    Method("awq-df+rtn", {"awq": True}),
    Method("awq-df+hqq-default", {"awq": True, "hqq": True}),
    Method("awq-df+hqq-u4", {"awq": True, **_hqq(scale_search_steps=7, num_iterations=1)}),
    Method("awq-df+hqq-u4-offset", {"awq": True, **_hqq(zero_point_storage="offset", scale_search_steps=7)}),
    Method("awq+se", {"awq": True, "scale_estimation": True}, data_aware=True),
    Method("gptq+se", {"gptq": True, "scale_estimation": True}, data_aware=True),
    Method("awq+se+hqq-default", {"awq": True, "scale_estimation": True, "hqq": True}, data_aware=True),
    Method("se+hqq-default", {"scale_estimation": True, "hqq": True}, data_aware=True),
    # fed the model's own text (what `compress_weights(..., hqq=True)` does with `self_calibration`, and what
    # optimum-intel's dataset="auto" feeds NNCF's AWQ + scale estimation)
    Method("self:awq+se", {"awq": True, "scale_estimation": True}, data_aware=True, calibration="self"),
    Method("self:awq", {"awq": True}, data_aware=True, calibration="self"),
    Method("self:awq+se+hqq-default", {"awq": True, "scale_estimation": True, "hqq": True}, True, calibration="self"),
    Method("self:awq+hqq-default", {"awq": True, "hqq": True}, data_aware=True, calibration="self"),
    Method("self:se+hqq-default", {"scale_estimation": True, "hqq": True}, data_aware=True, calibration="self"),
    # the model's own text in optimum-intel's shape: 128 sequences of 32 tokens (more samples, same tokens)
    *[
        Method(
            f"self-128x32:{name}",
            kwargs,
            True,
            calibration="self",
            self_params=(("num_sequences", 128), ("length", 32)),
        )
        for name, kwargs in (
            ("awq+se+hqq-default", {"awq": True, "scale_estimation": True, "hqq": True}),
            ("se+hqq-default", {"scale_estimation": True, "hqq": True}),
        )
    ],
    # experiment: the data-aware scale choice of `benchmarks.experiments.gram_experiment` on the model's own text
    Method("self:gram", data_aware=True, calibration="self", experiment="gram"),
    Method(
        "self-128x32:gram",
        True,
        calibration="self",
        self_params=(("num_sequences", 128), ("length", 32)),
        experiment="gram",
    ),
    # the same with G's diagonal only (second moments), and on random token ids instead of text
    Method("self:gram-diag", data_aware=True, calibration="self", experiment="gram-diag"),
    Method("random:gram", experiment="gram-random"),
    Method("random:gram-diag", experiment="gram-diag-random"),
    # the library's data-aware HQQ (a dataset given: the error weighted by the activations' second moments), on
    # real text, self-written text and random token ids; and NNCF's GPTQ + scale estimation on self-written text
    Method("hqq-moments", {"hqq": True}, data_aware=True),
    Method("self:hqq-moments", {"hqq": True}, data_aware=True, calibration="self"),
    Method("random:hqq-moments", {"hqq": True}, data_aware=True, calibration="random"),
    Method("random4:hqq-moments", {"hqq": True}, data_aware=True, calibration="random4"),
    Method(
        "self:hqq-auto-moments",
        {"hqq": True, "equalization_params": AdvancedEqualizationParameters(method="auto")},
        data_aware=True,
        calibration="self",
    ),
    Method("self:gptq+se", {"gptq": True, "scale_estimation": True}, data_aware=True, calibration="self"),
    # optimum-intel's dataset="auto": its 128 self-written texts of 32 tokens, NNCF's AWQ + scale estimation
    Method("auto:awq+se", {"awq": True, "scale_estimation": True}, data_aware=True, calibration="auto"),
    Method("auto:awq+se+hqq-default", {"awq": True, "scale_estimation": True, "hqq": True}, True, calibration="auto"),
    # SINQ's foldable balance as its reference code runs it (benchmarks.presinq), then RTN or the default's HQQ
    Method("presinq+rtn", equalize="presinq"),
    Method(
        "presinq+hqq-default",
        {"hqq": True, "equalization_params": AdvancedEqualizationParameters(method="none")},
        equalize="presinq",
    ),
    # the default's HQQ with each balance, pinned: power (c = mean|W|^0.5), the library's Sinkhorn (SINQ's rule)
    Method("hqq-power", {**UNWEIGHTED, "equalization_params": AdvancedEqualizationParameters(method="power")}),
    Method("hqq-sinkhorn", {**UNWEIGHTED, "equalization_params": AdvancedEqualizationParameters(method="sinkhorn")}),
    # per group the least estimated RTN output error of Sinkhorn, power and none: the activations measured on random
    # tokens (windows from the model's BOS token, as the command runs it), or estimated from the weights (beta)
    Method("hqq-auto", {**UNWEIGHTED, "equalization_params": AdvancedEqualizationParameters(method="auto")}),
    *[
        Method(
            f"hqq-auto-b{beta}",
            {
                **UNWEIGHTED,
                "equalization_params": AdvancedEqualizationParameters(
                    method="auto", activations="weights", prior_exponent=beta
                ),
            },
        )
        for beta in (0.0, 1.0)
    ],
    # equalization experiments
    *[
        Method(f"eq-{spec}+rtn", equalize=spec)
        for spec in (
            "sinkhorn",
            "pow:0.25",
            "pow:0.5",
            "pow:0.75",
            "pow:0.5@norm,gated",
            "pow:0.5@norm",
            "pow:0.5@gated",
            "pow:0.5@attention",
            "sinkhorn@norm,gated",
            "pow:0.5|guard",
            "pow:0.5|guardplain",
            "sinkhorn|guard",
        )
    ],
    *[
        Method(f"eq-{spec}+hqq-nosearch", _hqq(scale_search_steps=0, num_iterations=1), equalize=spec)
        for spec in (
            "pow:0.5",
            "pow:0.5@norm,gated",
            "pow:0.5@gated,attention",
            "pow:0.5@gated",
            "pow:0.5@attention",
            "pow:0.25",
            "pow:0.5|guard",
        )
    ],
    *[
        Method(f"eq-{spec}+hqq-u4", _hqq(scale_search_steps=7, num_iterations=1), equalize=spec)
        for spec in ("pow:0.5", "pow:0.5@norm,gated", "pow:0.25")
    ],
]
METHODS_BY_NAME = {m.name: m for m in METHODS}
CONFIGS = [("int4_asym", 64), ("int4_asym", 128), ("int4_sym", 128)]


def method(name: str) -> Method:
    """The registry's method `name`; raises SystemExit listing the names otherwise."""
    if name not in METHODS_BY_NAME:
        raise SystemExit(f"Unknown method {name}; known: {', '.join(METHODS_BY_NAME)}")
    return METHODS_BY_NAME[name]


def safe_name(name: str) -> str:
    """`name` usable as a directory name anywhere (optimum-intel takes paths with some characters for hub ids)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def parse_configs(configs: list[str]) -> list[tuple[str, int]]:
    """ "mode:group" strings, e.g. "int4_asym:64", as (mode, group size)."""
    return [(c.split(":")[0], int(c.split(":")[1])) for c in configs]


def compress_model(
    ir_file: Path,
    method: Method,
    mode: str,
    group_size: int,
    dataset: nncf.Dataset | None = None,
    **extra,
) -> tuple[ov.Model, float]:
    """
    The IR compressed with `method` (the model unchanged for the full-precision row) and the seconds it took;
    `extra`: more `compress_weights` arguments.
    """
    model = ov.Core().read_model(ir_file)
    if method.name == FULL_PRECISION:
        return model, 0.0
    kwargs = dict(method.kwargs)
    advanced_names = ("hqq_params", "equalization_params", "offload_codes", "self_calibration")
    given = {name: kwargs.pop(name) for name in advanced_names if name in kwargs}
    # group sizes that do not divide a layer's channels fall back to a smaller group, alike for every method
    advanced = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
    # random token windows (auto's, HQQ's) start with the model's BOS token, as the command runs them
    advanced = dataclasses.replace(advanced, **given).with_bos_token_id(bos_token_id(ir_file.parent))
    start = time.perf_counter()
    if method.experiment is not None and method.experiment.startswith("gram"):
        from benchmarks.experiments import gram_experiment

        variant = dict(diagonal="diag" in method.experiment)
        if "random" in method.experiment:
            variant.update(random_tokens=32, bos_token_id=bos_token_id(ir_file.parent))
        model = gram_experiment.compress(ir_file, mode, group_size, dataset, advanced, **variant, **kwargs, **extra)
        return model, time.perf_counter() - start
    if method.equalize is not None:
        from benchmarks import equalization_experiments

        bits = 8 if mode.startswith("int8") else 4
        equalization_experiments.fold(model, equalization_experiments.plan(model, method.equalize, group_size, bits))
    model = compress_weights(
        model,
        mode=nncf.CompressWeightsMode(mode),
        group_size=group_size,
        dataset=dataset if method.data_aware else None,
        advanced_parameters=advanced,
        **kwargs,
        **extra,
    )
    return model, time.perf_counter() - start


def compress(ir_file: Path, method: Method, mode: str, group_size: int, dataset, out_dir: Path) -> float:
    """Compresses the IR with `method` into the model directory `out_dir`; returns the compression seconds."""
    model, seconds = compress_model(ir_file, method, mode, group_size, dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, out_dir / "openvino_model.xml")
    copy_companion_files(ir_file.parent, out_dir)
    return seconds
