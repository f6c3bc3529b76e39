from soft_tokens.cramming import spec as cramming
from soft_tokens.vocabulary import INITS


rule cram:
    input:
        model="resources/models/{model}",
        corpus="resources/data/{corpus}.parquet",
    output:
        parquet="results/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}_{optimizer}.parquet",
        vectors="results/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}_{optimizer}.safetensors",
    log:
        "logs/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}_{optimizer}.log",
    benchmark:
        "results/benchmarks/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}_{optimizer}.tsv"
    wildcard_constraints:
        length=r"\d+",
        n_mem=r"\d+",
        variant="|".join(cramming.VARIANTS),
        init="|".join(INITS),
        optimizer=r"[^/]+",
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: cramming.cram_settings(config, w.model)["mem_mb"],
        runtime=lambda w: cramming.cram_settings(config, w.model)["runtime"],
    params:
        job=job("cram"),
    script:
        "../workflow/scripts/cram.py"


rule capacity:
    input:
        model="resources/models/{model}",
        corpus="resources/data/{corpus}.parquet",
    output:
        parquet="results/capacity/{model}/{corpus}/mem{n_mem}_{variant}_{init}_{optimizer}.parquet",
        vectors="results/capacity/{model}/{corpus}/mem{n_mem}_{variant}_{init}_{optimizer}.safetensors",
    log:
        "logs/capacity/{model}/{corpus}/mem{n_mem}_{variant}_{init}_{optimizer}.log",
    benchmark:
        "results/benchmarks/capacity/{model}/{corpus}/mem{n_mem}_{variant}_{init}_{optimizer}.tsv"
    wildcard_constraints:
        n_mem=r"\d+",
        variant="|".join(cramming.VARIANTS),
        init="|".join(INITS),
        optimizer=r"[^/]+",
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: cramming.cram_settings(config, w.model)["mem_mb"],
        runtime=lambda w: cramming.cram_settings(config, w.model)["runtime"],
    params:
        job=job("capacity"),
    script:
        "../workflow/scripts/cram.py"


rule summarize_cramming:
    input:
        samples=cramming.cram_results(config, ".parquet"),
        capacity=cramming.capacity_results(config),
    output:
        **section_outputs(cramming, "cramming", "Cramming"),
        summary="results/cramming_summary.parquet",
        table="results/table.tex",
        capacity="results/cramming_capacity.parquet",
        stages="results/capacity_stages.parquet",
    log:
        "logs/summarize_cramming.log",
    benchmark:
        "results/benchmarks/summarize_cramming.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/summarize_cramming.py"
