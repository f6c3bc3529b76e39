import os
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecMode

sys.path.insert(0, f"{workflow.basedir}/src")
from soft_tokens.workflow import (
    COCONUT_METHODS,
    COMPRESSOR_ARCHS,
    CONVERTER_ARCHS,
    INITS,
    REASONING_SPLITS,
    STARTS_FROM_COT,
    VARIANTS,
    canonical,
    capacity_jobs,
    coconut_protocol,
    coconut_seeds,
    compressor_protocol,
    first_cot_seed,
    pooler_protocol,
    HRPO_POLICIES,
    hrpo_protocol,
    hrpo_runs,
    cram_jobs,
    cram_settings,
    job_params,
)
from soft_tokens.validation import (
    DEFAULT_CONFIG,
    check,
    check_outputs,
    check_placeholders,
    read_yaml,
)

# Without --configfile, the embedded default; with it, that file alone: configs never merge.
if not workflow.overwrite_configfiles:
    # A syntax error, named with its line here (Snakemake's own reading names none).
    read_yaml(DEFAULT_CONFIG)

    configfile: str(DEFAULT_CONFIG)

    if workflow.config_settings.config:
        logger.info(
            f"Config: config/config.yaml, with --config {sorted(workflow.config_settings.config)} "
            "merged into it, so every track it turns on runs; to run only your own settings, give a "
            "complete config file with --configfile (it replaces the default)."
        )


if len(workflow.overwrite_configfiles) > 1:
    logger.info(
        f"Config: {' + '.join(map(str, workflow.overwrite_configfiles))}, merged in that order "
        "(a later file's keys win)."
    )


def config_source():
    """The config file(s) a message about the config should name."""
    files = [str(f) for f in workflow.overwrite_configfiles] or [str(DEFAULT_CONFIG)]
    extra = " (with --config)" if workflow.config_settings.config else ""
    return " + ".join(files) + extra


check(config, config_source(), Path.cwd())

TEX = shutil.which("pdflatex")
if TEX is None:
    logger.warning(
        "pdflatex not found: results/report.pdf will not be built (install texlive-latex-base "
        "texlive-latex-recommended lmodern); results/table.tex is written all the same."
    )

RUN_DIR = "SOFT_TOKENS_RUN_DIR"


def run_dir():
    """The folder this run writes to: `--directory` if given (Snakemake is already there), else the
    config's `workdir`. Jobs Snakemake spawns (on a cluster) start where it was started and never
    get `--directory`, so the main process hands them the folder through their environment.
    """
    if workflow.exec_mode == ExecMode.DEFAULT:
        chosen = os.getcwd() if workflow.overwrite_workdir else config["workdir"]
        os.environ[RUN_DIR] = os.path.abspath(chosen)
    elif RUN_DIR not in os.environ:
        raise WorkflowError(
            f"{RUN_DIR} is not set in this job's environment: let cluster jobs inherit the "
            "environment of the Snakemake process (sbatch's default, --export=ALL)."
        )
    return os.environ[RUN_DIR]


OUTPUT_DIR = run_dir()


onstart:
    # Before the first job is submitted (a dry run, which submits nothing, passes).
    settings = workflow.resource_settings
    check_placeholders(
        {
            **{
                f"default-resources {name}": r.raw
                for name, r in (settings.default_resources or {}).items()
            },
            **{
                f"set-resources {rule} {name}": r.raw
                for rule, resources in settings.overwrite_resources.items()
                for name, r in resources.items()
            },
        },
        "the profile (profiles/slurm/profile.yaml, --default-resources or --set-resources)",
    )


def check_earlier_outputs():
    """Stop at damaged files an earlier run left (Snakemake would keep them as they exist), naming
    what to remove; called once every rule is defined, since the outputs they write decide that.
    """
    if workflow.exec_mode == ExecMode.DEFAULT:
        check_outputs(
            Path(OUTPUT_DIR),
            lambda path: any(rule.is_producer(path) for rule in workflow.rules),
        )


# Report sections in order: each track's rules file registers its section and figures when it is on.
SECTIONS = {}


wildcard_constraints:
    model=r"[^/]+",
    corpus=r"[^/]+",
    length=r"\d+",
    n_mem=r"\d+",
    variant="|".join(VARIANTS),
    init="|".join(INITS),
    optimizer=r"[^/]+",
    layer=r"-?\d+",
    arch="|".join(CONVERTER_ARCHS),
    carch="|".join(COMPRESSOR_ARCHS),
    dataset=r"[^/]+",
    seed=r"\d+",
    method="|".join(COCONUT_METHODS),
    window=r"\d+",
    policy="|".join(HRPO_POLICIES),


localrules:
    download_corpus,
    build_reasoning_data,
    summarize_cramming,
    summarize_converter,
    summarize_compressor,
    summarize_coconut,
    summarize_pooler,
    summarize_hrpo,
    render_report,
    compile_report,
    effective_config,


def job(rule):
    """A job's params: exactly the config keys it reads (soft_tokens.workflow.job_params), so that
    editing anything else neither reruns it nor discards its half-done work."""
    return lambda wildcards: job_params(config, rule, dict(wildcards.items()))


def cram_results(ext):
    """Every cram job's output file with extension `ext`, over the configured grid."""
    return [
        "results/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}_{optimizer}{ext}".format(
            ext=ext, **grid_point
        )
        for grid_point in cram_jobs(config)
    ]


def capacity_results():
    """Every capacity search's stages, over the configured searches."""
    return [
        "results/capacity/{model}/{corpus}/mem{n_mem}_{variant}_{init}_{optimizer}.parquet".format(
            **search
        )
        for search in capacity_jobs(config)
    ]


def cram_resource(key):
    return lambda wildcards: cram_settings(config, wildcards.model)[key]


def figure_outputs(figures, category):
    """The PNG (in the Snakemake report) and PDF (for LaTeX) of each of a track's figures."""
    outputs = {}
    for name in figures:
        outputs[name] = report(
            f"results/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category=category,
        )
        outputs[f"{name}_pdf"] = f"results/figures/{name}.pdf"
    return outputs


def section_inputs():
    return expand("results/sections/{track}.tex", track=SECTIONS)


def section_figures(ext):
    """The figure files (png for the Snakemake report, pdf for LaTeX) of every registered section."""
    return [
        f"results/figures/{name}.{ext}"
        for figures in SECTIONS.values()
        for name in figures
    ]


def all_outputs():
    outputs = ["results/table.tex", "results/config.yaml", *section_figures("png")]
    if TEX:
        outputs.append("results/report.pdf")
    return outputs


def coconut_train_inputs(wildcards):
    """The base model and the data; methods that continue from CoT also get the CoT run of their seed."""
    inputs = {
        "model": f"resources/models/{wildcards.model}",
        "train": f"resources/reasoning/{wildcards.dataset}/train.parquet",
        "val": f"resources/reasoning/{wildcards.dataset}/val.parquet",
    }
    if wildcards.method in STARTS_FROM_COT:
        inputs["cot"] = (
            f"results/coconut/{wildcards.model}/{wildcards.dataset}/seed{wildcards.seed}/cot"
        )
    return inputs


def pooler_inputs(wildcards):
    """The frozen main LM (the Coconut CoT run of the first Coconut seed, or the prepared model) and
    the training problems (which also set the untrained pooler's output scale)."""
    main = f"resources/models/{wildcards.model}"
    if config["pooler"]["main"] == "cot":
        main = f"results/coconut/{wildcards.model}/{wildcards.dataset}/seed{first_cot_seed(config)}/cot"
    return {
        "main": main,
        "train": f"resources/reasoning/{wildcards.dataset}/train.parquet",
    }


def hrpo_start(wildcards):
    """The start checkpoint: the Coconut CoT run of the first Coconut seed, or the prepared model."""
    if config["hrpo"]["start"] == "cot":
        return f"results/coconut/{wildcards.model}/{wildcards.dataset}/seed{first_cot_seed(config)}/cot"
    return f"resources/models/{wildcards.model}"


def hrpo_inputs(wildcards):
    """The start checkpoint and every split (prompts come from train, or are fresh problems kept
    apart from all three)."""
    return {
        "start": hrpo_start(wildcards),
        **{
            split: f"resources/reasoning/{wildcards.dataset}/{split}.parquet"
            for split in REASONING_SPLITS
        },
    }


def hrpo_eval_inputs(wildcards):
    """The start checkpoint, the test split and, for a trained method, its policy."""
    inputs = {
        "start": hrpo_start(wildcards),
        "test": f"resources/reasoning/{wildcards.dataset}/test.parquet",
    }
    if wildcards.policy != "start":
        inputs["policy"] = (
            "results/hrpo/{model}/{dataset}/{policy}/seed{seed}/policy.pt".format(
                **wildcards
            )
        )
    return inputs
