from soft_tokens.latent.pooler import spec as pooler


rule train_pooler:
    input:
        unpack(track_inputs(pooler.inputs)),
    output:
        pooler=directory("results/pooler/{model}/{dataset}/w{window}/pooler"),
        curve="results/pooler/{model}/{dataset}/w{window}/curve.parquet",
    log:
        "logs/pooler/{model}/{dataset}/train_w{window}.log",
    benchmark:
        "results/benchmarks/pooler/{model}/{dataset}/train_w{window}.tsv"
    wildcard_constraints:
        window=r"\d+",
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=config["pooler"]["mem_mb"],
        runtime=config["pooler"]["runtime"],
    params:
        job=job("train_pooler"),
    script:
        "../workflow/scripts/train_pooler.py"


rule eval_pooler:
    input:
        unpack(track_inputs(pooler.inputs)),
        pooler="results/pooler/{model}/{dataset}/w{window}/pooler",
        test="resources/reasoning/{dataset}/test.parquet",
    output:
        "results/pooler/{model}/{dataset}/w{window}/eval.parquet",
    log:
        "logs/pooler/{model}/{dataset}/eval_w{window}.log",
    benchmark:
        "results/benchmarks/pooler/{model}/{dataset}/eval_w{window}.tsv"
    wildcard_constraints:
        window=r"\d+",
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("eval_pooler"),
    script:
        "../workflow/scripts/eval_pooler.py"


rule eval_pooler_baselines:
    input:
        unpack(track_inputs(pooler.inputs)),
        test="resources/reasoning/{dataset}/test.parquet",
    output:
        "results/pooler/{model}/{dataset}/baselines.parquet",
    log:
        "logs/pooler/{model}/{dataset}/eval_baselines.log",
    benchmark:
        "results/benchmarks/pooler/{model}/{dataset}/eval_baselines.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("eval_pooler_baselines"),
    script:
        "../workflow/scripts/eval_pooler_baselines.py"


rule summarize_pooler:
    input:
        windows=expand(
            "results/pooler/{model}/{dataset}/w{window}/eval.parquet",
            model=config["pooler"]["models"],
            dataset=config["pooler"]["datasets"],
            window=config["pooler"]["windows"],
        ),
        baselines=expand(
            "results/pooler/{model}/{dataset}/baselines.parquet",
            model=config["pooler"]["models"],
            dataset=config["pooler"]["datasets"],
        ),
        curves=expand(
            "results/pooler/{model}/{dataset}/w{window}/curve.parquet",
            model=config["pooler"]["models"],
            dataset=config["pooler"]["datasets"],
            window=config["pooler"]["windows"],
        ),
    output:
        **section_outputs(pooler, "pooler", "Reasoning-window pooler"),
        summary="results/pooler_summary.parquet",
    log:
        "logs/summarize_pooler.log",
    benchmark:
        "results/benchmarks/summarize_pooler.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        protocol=pooler.protocol(config),
    script:
        "../workflow/scripts/summarize_pooler.py"
