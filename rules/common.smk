import os
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config
from snakemake_interface_executor_plugins.settings import ExecMode

sys.path.insert(0, f"{workflow.basedir}/src")
from soft_tokens.core import warm_start
from soft_tokens.core.curves import TENSORBOARD
from soft_tokens.report.provenance import CONFIG_SOURCE
from soft_tokens.script_times import align_script_times, record_script_times
from soft_tokens.vocabulary import canonical
from soft_tokens.workflow import job_params, sections
from soft_tokens.validation import (
    DEFAULT_CONFIG,
    check,
    check_outputs,
    check_placeholders,
    check_writable,
    read_yaml,
    typed_overrides,
    with_base,
)

# Without --configfile, the embedded default; with it, that file alone, or on the `base:` it names.
if not workflow.overwrite_configfiles:
    # A syntax error, named with its line here (Snakemake's own reading names none).
    read_yaml(DEFAULT_CONFIG)

    configfile: str(DEFAULT_CONFIG)

    if workflow.config_settings.config:
        logger.info(
            f"Config: config/config.yaml, with --config {sorted(workflow.config_settings.config)} "
            "merged into it, so every track it turns on runs; to run only your own settings, give a "
            "config file with --configfile (it replaces the default; `base: config/config.yaml` in "
            "it takes every key it does not set from the default)."
        )


if len(workflow.overwrite_configfiles) > 1:
    logger.info(
        f"Config: {' + '.join(map(str, workflow.overwrite_configfiles))}, merged in that order "
        "(a later file's keys win)."
    )


BASE = config.get("base")


def config_source():
    """The config file(s) a message about the config should name."""
    files = [str(f) for f in workflow.overwrite_configfiles] or [str(DEFAULT_CONFIG)]
    extra = " (with --config)" if workflow.config_settings.config else ""
    on = f" (on {BASE})" if BASE else ""
    return " + ".join(files) + on + extra


# Nested --config values arrive as strings ('hrpo={steps: 40}'); the schema types them. A config
# file that names a `base:` takes every key it does not set from that file.
update_config(config, typed_overrides(workflow.config_settings.config or {}))
if BASE:
    resolved = with_base(config, config_source())
    config.clear()
    config.update(resolved)
# The config file(s) of this run, for the provenance the report states; handed to jobs through
# their environment rather than as a parameter, so that renaming a config file reruns nothing.
if workflow.exec_mode == ExecMode.DEFAULT:
    os.environ[CONFIG_SOURCE] = config_source()

TEX = shutil.which("pdflatex")
if TEX is None:
    logger.warning(
        "pdflatex not found: results/report.pdf will not be built (install texlive-latex-base "
        "texlive-latex-recommended lmodern); results/report.tex is written all the same."
    )

RUN_DIR = "SOFT_TOKENS_RUN_DIR"


def run_dir():
    """The folder this run writes to: `--directory` if given (Snakemake is already there), else the
    config's `workdir`. Jobs Snakemake spawns (on a cluster) start where it was started and never
    get `--directory`, so the main process hands them the folder through their environment.
    """
    if workflow.exec_mode == ExecMode.DEFAULT:
        chosen = (
            os.getcwd() if workflow.overwrite_workdir else config.get("workdir", ".")
        )
        os.environ[RUN_DIR] = os.path.abspath(chosen)
    elif RUN_DIR not in os.environ:
        raise WorkflowError(
            f"{RUN_DIR} is not set in this job's environment: let cluster jobs inherit the "
            "environment of the Snakemake process (sbatch's default, --export=ALL)."
        )
    return os.environ[RUN_DIR]


OUTPUT_DIR = run_dir()
check(config, config_source(), Path.cwd(), Path(OUTPUT_DIR))
SCRIPTS = Path(workflow.basedir, "workflow", "scripts")

if workflow.exec_mode == ExecMode.DEFAULT:
    # A run folder jobs cannot write, named before Snakemake fails on it in its own traceback.
    check_writable(Path(OUTPUT_DIR))
    # A clone or checkout makes every script newer than the outputs; only a changed one should rerun.
    for change in align_script_times(SCRIPTS, Path(OUTPUT_DIR)):
        logger.info(f"Script times: {change}")

# Training curves to TensorBoard too (soft_tokens.core.curves), through the jobs' environment: logging
# only, so never a job parameter.
if workflow.exec_mode == ExecMode.DEFAULT and config["tensorboard"]:
    os.environ[TENSORBOARD] = os.path.join(OUTPUT_DIR, "tensorboard")


def report_path(argv):
    """Where `snakemake --report [FILE]` writes: FILE (report.html if none) inside the run's folder,
    which Snakemake's own "Report created." does not say."""
    for i, arg in enumerate(argv):
        if arg.startswith("--report="):
            return Path(OUTPUT_DIR, arg.split("=", 1)[1])
        if arg == "--report":
            given = (
                argv[i + 1]
                if i + 1 < len(argv) and not argv[i + 1].startswith("-")
                else "report.html"
            )
            return Path(OUTPUT_DIR, given)
    return None


if report_path(sys.argv):
    logger.info(f"The report will be written to {report_path(sys.argv)}")


# The warm-start server of a local run (soft_tokens.core.warm_start), stopped when the run ends.
WARM_SERVERS = []


onstart:
    # Before the first job is submitted (a dry run, which submits nothing, passes).
    record_script_times(SCRIPTS, Path(OUTPUT_DIR))
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
    if warm_start.wanted(workflow, config["device"]):
        WARM_SERVERS.append(warm_start.start(Path("logs/warm_start.log")))


def stop_warm_servers():
    while WARM_SERVERS:
        warm_start.stop(WARM_SERVERS.pop())


onsuccess:
    stop_warm_servers()


onerror:
    stop_warm_servers()


def check_earlier_outputs():
    """Stop at damaged files an earlier run left (Snakemake would keep them as they exist), naming
    what to remove; called once every rule is defined, since the outputs they write decide that.
    """
    if workflow.exec_mode == ExecMode.DEFAULT:
        check_outputs(
            Path(OUTPUT_DIR),
            lambda path: any(rule.is_producer(path) for rule in workflow.rules),
        )


# The report sections of the tracks the config turns on, in order, each with its figures.
SECTIONS = sections(config)


# Wildcards every track shares; each rule constrains its own.
wildcard_constraints:
    model=r"[^/]+",
    corpus=r"[^/]+",
    dataset=r"[^/]+",
    seed=r"\d+",


def job(rule):
    """A job's params: exactly the config keys it reads (soft_tokens.workflow.job_params), so that
    editing anything else neither reruns it nor discards its half-done work."""
    return lambda wildcards: job_params(config, rule, dict(wildcards.items()))


def track_inputs(inputs):
    """A track's input function `inputs(config, wildcards)` as Snakemake calls it."""
    return lambda wildcards: inputs(config, dict(wildcards.items()))


def section_outputs(track, section, category):
    """A track's report section: its LaTeX, its page of the Snakemake report (the section's tables and
    findings in HTML), and the PNG (in the Snakemake report, captioned from the track's package) and
    PDF (for LaTeX) of each of its figures, all under the track's `category`."""
    captions = Path(track.__file__).parent.relative_to(workflow.basedir) / "captions"
    outputs = {
        "section": f"results/sections/{section}.tex",
        "page": report(
            f"results/sections/{section}.html",
            caption="../report/section_page.rst",
            category=category,
        ),
    }
    for name in track.SECTIONS[section]:
        outputs[name] = report(
            f"results/figures/{name}.png",
            caption=f"../{captions}/{name}.rst",
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
    outputs = [
        "results/report.tex",
        *(["results/table.tex"] if "cramming" in SECTIONS else []),
        "results/config.yaml",
        "docs/results.md",
        *expand("results/sections/{track}.html", track=SECTIONS),
        *section_figures("png"),
    ]
    if TEX:
        outputs.append("results/report.pdf")
    return outputs
