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
    params:
        spec=lambda wildcards: canonical(config["models"][wildcards.model]),
        seed=config["seed"],
    script:
        "../workflow/scripts/prepare_model.py"
