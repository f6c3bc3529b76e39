from soft_tokens.vocabulary import REASONING_SPLITS


rule build_reasoning_data:
    output:
        expand(
            "resources/reasoning/{{dataset}}/{split}.parquet", split=REASONING_SPLITS
        ),
    log:
        "logs/reasoning_data/{dataset}.log",
    benchmark:
        "results/benchmarks/reasoning_data/{dataset}.tsv"
    localrule: True
    conda:
        "../envs/torch.yaml"
    params:
        spec=lambda wildcards: canonical(config["reasoning"][wildcards.dataset]),
        seed=config["seed"],
    script:
        "../workflow/scripts/build_reasoning_data.py"
