from snakemake.utils import min_version

min_version("9.0")


report: "report/workflow.rst"


include: "rules/common.smk"


# Outputs go to the config's `workdir` (or `--directory`, which takes precedence).
if workflow.overwrite_workdir is None:

    workdir: OUTPUT_DIR


include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/cramming.smk"
include: "rules/converter.smk"
include: "rules/compressor.smk"
include: "rules/reasoning_data.smk"
include: "rules/coconut.smk"
include: "rules/pooler.smk"
include: "rules/hrpo.smk"
include: "rules/report.smk"


check_earlier_outputs()


rule all:
    input:
        all_outputs(),
