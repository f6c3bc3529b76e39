from soft_tokens.compression import spec as compression


rule build_estar:
    input:
        model="resources/models/{model}",
        corpus=f"resources/data/{config['estar']['corpus']}.parquet",
    output:
        vectors="results/estar/{model}/estar.safetensors",
        table="results/estar/{model}/estar.parquet",
    log:
        "logs/estar/{model}/build_estar.log",
    benchmark:
        "results/benchmarks/estar/{model}/build_estar.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("build_estar"),
    script:
        "../workflow/scripts/build_estar.py"


rule train_compressor:
    input:
        model="resources/models/{model}",
        estar="results/estar/{model}/estar.safetensors",
    output:
        compressor="results/compressor/{model}/{arch}.pt",
        curve="results/compressor/{model}/{arch}_curve.parquet",
    log:
        "logs/compressor/{model}/train_{arch}.log",
    benchmark:
        "results/benchmarks/compressor/{model}/train_{arch}.tsv"
    wildcard_constraints:
        arch="|".join(compression.COMPRESSOR_ARCHS),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("train_compressor"),
    script:
        "../workflow/scripts/train_compressor.py"


rule eval_compressor:
    input:
        model="resources/models/{model}",
        estar="results/estar/{model}/estar.safetensors",
        compressor="results/compressor/{model}/{arch}.pt",
    output:
        "results/compressor/{model}/eval_{arch}.parquet",
    log:
        "logs/compressor/{model}/eval_{arch}.log",
    benchmark:
        "results/benchmarks/compressor/{model}/eval_{arch}.tsv"
    wildcard_constraints:
        arch="|".join(compression.COMPRESSOR_ARCHS),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("eval_compressor"),
    script:
        "../workflow/scripts/eval_compressor.py"


rule summarize_compressor:
    input:
        evals=expand(
            "results/compressor/{model}/eval_{arch}.parquet",
            model=config["estar"]["models"],
            arch=config["compressor"]["archs"],
        ),
        curves=expand(
            "results/compressor/{model}/{arch}_curve.parquet",
            model=config["estar"]["models"],
            arch=config["compressor"]["archs"],
        ),
        estar=expand(
            "results/estar/{model}/estar.parquet", model=config["estar"]["models"]
        ),
    output:
        **section_outputs(compression, "compressor", "Compressor"),
        summary="results/compressor_summary.parquet",
    log:
        "logs/summarize_compressor.log",
    benchmark:
        "results/benchmarks/summarize_compressor.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        protocol=compression.compressor_protocol(config),
    script:
        "../workflow/scripts/summarize_compressor.py"
