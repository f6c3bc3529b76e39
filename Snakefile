from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/cramming.smk"
include: "rules/converter.smk"
include: "rules/compressor.smk"
include: "rules/reasoning_data.smk"
include: "rules/coconut.smk"
include: "rules/report.smk"


rule all:
    input:
        all_outputs(),
