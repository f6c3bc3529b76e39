import shutil
import sys

from snakemake.utils import validate

sys.path.insert(0, f"{workflow.basedir}/src")
from soft_tokens.config import (
    COCONUT_METHODS,
    REASONING_SPLITS,
    STARTS_FROM_COT,
    check_config,
    coconut_settings,
    cram_jobs,
    cram_settings,
)

validate(config, schema="../config/schema.yaml")
check_config(config)

TEX = shutil.which("pdflatex")
if TEX is None:
    logger.warning(
        "pdflatex not found: results/report.pdf will not be built (install texlive-latex-base "
        "texlive-latex-recommended lmodern); results/table.tex is written all the same."
    )


wildcard_constraints:
    model=r"[^/]+",
    corpus=r"[^/]+",
    length=r"\d+",
    n_mem=r"\d+",
    variant=r"base|bos|2leading",
    init=r"randn|mean|token",
    layer=r"-?\d+",
    arch=r"linear|mlp",
    carch=r"hyper|qattn",
    dataset=r"[^/]+",
    method="|".join(COCONUT_METHODS),


localrules:
    download_corpus,
    build_reasoning_data,
    summarize_cramming,
    summarize_converter,
    summarize_compressor,
    summarize_coconut,
    plot_cramming,
    render_report,
    compile_report,


def cram_results(ext):
    """Every cram job's output file with extension `ext`, over the configured grid."""
    return [
        "results/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}{ext}".format(
            ext=ext, **job
        )
        for job in cram_jobs(config)
    ]


def cram_params(wildcards):
    """Everything a cram job needs besides its files: wildcards, the cramming section, device."""
    settings = cram_settings(config, wildcards.model)
    return {
        **settings,
        "model": wildcards.model,
        "corpus": wildcards.corpus,
        "length": int(wildcards.length),
        "n_mem": int(wildcards.n_mem),
        "variant": wildcards.variant,
        "init": wildcards.init,
        "draw_length": config["corpora"][wildcards.corpus]["draw_length"],
        "seed": config["seed"],
        "device": config["device"],
        "dtype": config["dtype"],
    }


def cram_resource(key):
    return lambda wildcards: cram_settings(config, wildcards.model)[key]


def converter_results():
    """Every converter evaluation: model x layer x arch."""
    return expand(
        "results/converter/{model}/eval_layer{layer}_{arch}.parquet",
        model=config["converter"]["models"],
        layer=config["converter"]["layers"],
        arch=config["converter"]["archs"],
    )


def report_inputs():
    """What the report renders: cramming always, the converter track when it has models."""
    inputs = {
        "summary": "results/cramming_summary.parquet",
        "capacity": "results/cramming_capacity.parquet",
    }
    if config["converter"]["models"]:
        inputs["converter"] = "results/converter_summary.parquet"
        inputs["demo"] = demo_results()
    if config["estar"]["models"]:
        inputs["compressor"] = "results/compressor_summary.parquet"
    if config["coconut"]["models"]:
        inputs["coconut"] = "results/coconut_summary.parquet"
    return inputs


def report_figures():
    """The figures report.pdf shows: cramming's, and those of every track that is on."""
    figures = ["accuracy_vs_steps", "tf_vs_greedy"]
    if config["estar"]["models"]:
        figures.append("compressor_ce")
    if config["coconut"]["models"]:
        figures.append("coconut_accuracy_by_stage")
    return expand("results/figures/{fig}.pdf", fig=figures)


def coconut_train_inputs(wildcards):
    """The base model and the data; methods that continue from CoT also get the CoT run."""
    inputs = {
        "model": f"resources/models/{wildcards.model}",
        "train": f"resources/reasoning/{wildcards.dataset}/train.parquet",
        "val": f"resources/reasoning/{wildcards.dataset}/val.parquet",
    }
    if wildcards.method in STARTS_FROM_COT:
        inputs["cot"] = f"results/coconut/{wildcards.model}/{wildcards.dataset}/cot"
    return inputs


def coconut_results():
    """Every Coconut evaluation: model x dataset x method."""
    return expand(
        "results/coconut/{model}/{dataset}/eval_{method}.parquet",
        model=config["coconut"]["models"],
        dataset=config["coconut"]["datasets"],
        method=config["coconut"]["methods"],
    )


def compressor_results():
    """Every compressor evaluation: e* model x compressor arch."""
    return expand(
        "results/compressor/{model}/eval_{carch}.parquet",
        model=config["estar"]["models"],
        carch=config["compressor"]["archs"],
    )


def demo_results():
    return expand(
        "results/converter/{model}/recursive_demo.parquet",
        model=config["converter"]["models"],
    )


def all_outputs():
    outputs = ["results/table.tex", "results/cramming_summary.parquet"]
    outputs += expand(
        "results/figures/{fig}.png", fig=["accuracy_vs_steps", "tf_vs_greedy"]
    )
    if config["converter"]["models"]:
        outputs.append("results/converter_summary.parquet")
        outputs += demo_results()
    if config["estar"]["models"]:
        outputs += [
            "results/compressor_summary.parquet",
            "results/figures/compressor_ce.png",
        ]
    if config["coconut"]["models"]:
        outputs += [
            "results/coconut_summary.parquet",
            "results/figures/coconut_accuracy_by_stage.png",
        ]
    if TEX:
        outputs.append("results/report.pdf")
    return outputs
