from soft_tokens.latent.hrpo import spec as hrpo


rule train_hrpo:
    input:
        unpack(track_inputs(hrpo.train_inputs)),
    output:
        policy=directory("results/hrpo/{model}/{dataset}/{policy}/seed{seed}/policy"),
        history="results/hrpo/{model}/{dataset}/{policy}/seed{seed}/history.parquet",
    log:
        "logs/hrpo/{model}/{dataset}/train_{policy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/hrpo/{model}/{dataset}/train_{policy}_seed{seed}.tsv"
    wildcard_constraints:
        policy="|".join(hrpo.POLICIES),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=config["hrpo"]["mem_mb"],
        runtime=config["hrpo"]["runtime"],
    params:
        job=job("train_hrpo"),
        # fresh prompt problems are made by the dataset's own generator
        spec=lambda wildcards: canonical(config["reasoning"][wildcards.dataset]),
    script:
        "../workflow/scripts/train_hrpo.py"


rule eval_hrpo:
    input:
        unpack(track_inputs(hrpo.eval_inputs)),
    output:
        "results/hrpo/{model}/{dataset}/{policy}/seed{seed}/eval.parquet",
    log:
        "logs/hrpo/{model}/{dataset}/eval_{policy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/hrpo/{model}/{dataset}/eval_{policy}_seed{seed}.tsv"
    wildcard_constraints:
        policy="|".join(hrpo.POLICIES),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("eval_hrpo"),
    script:
        "../workflow/scripts/eval_hrpo.py"


rule summarize_hrpo:
    input:
        evals=[
            "results/hrpo/{model}/{dataset}/{policy}/seed{seed}/eval.parquet".format(
                **run
            )
            for run in hrpo.runs(config)
        ],
        histories=[
            "results/hrpo/{model}/{dataset}/{policy}/seed{seed}/history.parquet".format(
                **run
            )
            for run in hrpo.runs(config)
            if run["policy"] != "start"
        ],
    output:
        **section_outputs(hrpo, "hrpo", "HRPO"),
        summary="results/hrpo_summary.parquet",
    log:
        "logs/summarize_hrpo.log",
    benchmark:
        "results/benchmarks/summarize_hrpo.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        protocol=hrpo.protocol(config),
    script:
        "../workflow/scripts/summarize_hrpo.py"
