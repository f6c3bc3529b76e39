rule prepare_model:
    output:
        directory("resources/models/{model}"),
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        spec=lambda wildcards: config["models"][wildcards.model],
        seed=config["seed"],
    script:
        "../workflow/scripts/prepare_model.py"
