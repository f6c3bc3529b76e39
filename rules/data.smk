rule download_corpus:
    output:
        "resources/data/{corpus}.parquet",
    log:
        "logs/download_corpus/{corpus}.log",
    benchmark:
        "results/benchmarks/download_corpus/{corpus}.tsv"
    localrule: True
    conda:
        "../envs/torch.yaml"
    params:
        spec=lambda wildcards: canonical(config["corpora"][wildcards.corpus]),
        seed=config["seed"],
    script:
        "../workflow/scripts/download_corpus.py"
