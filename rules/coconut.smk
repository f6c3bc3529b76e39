rule train_coconut:
    input:
        unpack(coconut_train_inputs),
    output:
        directory("results/coconut/{model}/{dataset}/{method}"),
    log:
        "logs/coconut/{model}/{dataset}/train_{method}.log",
    benchmark:
        "results/benchmarks/coconut/{model}/{dataset}/train_{method}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=config["coconut"]["mem_mb"],
        runtime=config["coconut"]["runtime"],
    params:
        settings=lambda wildcards: coconut_settings(config, wildcards.dataset),
    script:
        "../workflow/scripts/train_coconut.py"


rule eval_coconut:
    input:
        run="results/coconut/{model}/{dataset}/{method}",
        test="resources/reasoning/{dataset}/test.parquet",
    output:
        "results/coconut/{model}/{dataset}/eval_{method}.parquet",
    log:
        "logs/coconut/{model}/{dataset}/eval_{method}.log",
    benchmark:
        "results/benchmarks/coconut/{model}/{dataset}/eval_{method}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=config["coconut"]["mem_mb"],
        runtime=60,
    params:
        settings=lambda wildcards: coconut_settings(config, wildcards.dataset),
    script:
        "../workflow/scripts/eval_coconut.py"


rule summarize_coconut:
    input:
        coconut_results(),
    output:
        summary="results/coconut_summary.parquet",
        figure=report(
            "results/figures/coconut_accuracy_by_stage.png",
            caption="../report/coconut_accuracy_by_stage.rst",
            category="Coconut",
        ),
        figure_pdf="results/figures/coconut_accuracy_by_stage.pdf",
    log:
        "logs/summarize_coconut.log",
    benchmark:
        "results/benchmarks/summarize_coconut.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/summarize_coconut.py"
