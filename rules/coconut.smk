from soft_tokens.latent.coconut import spec as coconut


rule train_coconut:
    input:
        unpack(track_inputs(coconut.train_inputs)),
    output:
        directory("results/coconut/{model}/{dataset}/seed{seed}/{method}"),
    log:
        "logs/coconut/{model}/{dataset}/seed{seed}/train_{method}.log",
    benchmark:
        "results/benchmarks/coconut/{model}/{dataset}/seed{seed}/train_{method}.tsv"
    wildcard_constraints:
        method="|".join(coconut.METHODS),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=config["coconut"]["mem_mb"],
        runtime=config["coconut"]["runtime"],
    params:
        job=job("train_coconut"),
    script:
        "../workflow/scripts/train_coconut.py"


rule eval_coconut:
    input:
        run="results/coconut/{model}/{dataset}/seed{seed}/{method}",
        test="resources/reasoning/{dataset}/test.parquet",
    output:
        "results/coconut/{model}/{dataset}/seed{seed}/eval_{method}.parquet",
    log:
        "logs/coconut/{model}/{dataset}/seed{seed}/eval_{method}.log",
    benchmark:
        "results/benchmarks/coconut/{model}/{dataset}/seed{seed}/eval_{method}.tsv"
    wildcard_constraints:
        method="|".join(coconut.METHODS),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("eval_coconut"),
    script:
        "../workflow/scripts/eval_coconut.py"


rule summarize_coconut:
    input:
        evals=expand(
            "results/coconut/{model}/{dataset}/seed{seed}/eval_{method}.parquet",
            model=config["coconut"]["models"],
            dataset=config["coconut"]["datasets"],
            seed=coconut.coconut_seeds(config),
            method=config["coconut"]["methods"],
        ),
        runs=expand(
            "results/coconut/{model}/{dataset}/seed{seed}/{method}",
            model=config["coconut"]["models"],
            dataset=config["coconut"]["datasets"],
            seed=coconut.coconut_seeds(config),
            method=config["coconut"]["methods"],
        ),
    output:
        **section_outputs(coconut, "coconut", "Coconut"),
        summary="results/coconut_summary.parquet",
    log:
        "logs/summarize_coconut.log",
    benchmark:
        "results/benchmarks/summarize_coconut.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        protocol=coconut.protocol(config),
    script:
        "../workflow/scripts/summarize_coconut.py"
