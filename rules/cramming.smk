CRAMMING_FIGURES = ["accuracy_vs_steps", "tf_vs_greedy", "capacity_search"]
if config["cramming"]["models"]:
    SECTIONS["cramming"] = CRAMMING_FIGURES


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
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=cram_resource("mem_mb"),
        runtime=cram_resource("runtime"),
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
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=cram_resource("mem_mb"),
        runtime=cram_resource("runtime"),
    params:
        job=job("capacity"),
    script:
        "../workflow/scripts/cram.py"


rule summarize_cramming:
    input:
        samples=cram_results(".parquet"),
        capacity=capacity_results(),
    output:
        **figure_outputs(CRAMMING_FIGURES, "Cramming"),
        summary="results/cramming_summary.parquet",
        capacity="results/cramming_capacity.parquet",
        stages="results/capacity_stages.parquet",
        section="results/sections/cramming.tex",
    log:
        "logs/summarize_cramming.log",
    benchmark:
        "results/benchmarks/summarize_cramming.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/summarize_cramming.py"
