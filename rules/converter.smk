from soft_tokens.compression import spec as compression


rule extract_pairs:
    input:
        model="resources/models/{model}",
    output:
        expand(
            "results/converter/{{model}}/pairs_layer{layer}.safetensors",
            layer=config["converter"]["layers"],
        ),
    log:
        "logs/converter/{model}/extract_pairs.log",
    benchmark:
        "results/benchmarks/converter/{model}/extract_pairs.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("extract_pairs"),
    script:
        "../workflow/scripts/extract_pairs.py"


rule train_converter:
    input:
        pairs="results/converter/{model}/pairs_layer{layer}.safetensors",
    output:
        converter="results/converter/{model}/converter_layer{layer}_{arch}.pt",
        curve="results/converter/{model}/converter_layer{layer}_{arch}_curve.parquet",
    log:
        "logs/converter/{model}/train_layer{layer}_{arch}.log",
    benchmark:
        "results/benchmarks/converter/{model}/train_layer{layer}_{arch}.tsv"
    wildcard_constraints:
        layer=r"-?\d+",
        arch="|".join(compression.CONVERTER_ARCHS),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    params:
        job=job("train_converter"),
    script:
        "../workflow/scripts/train_converter.py"


rule eval_converter:
    input:
        model="resources/models/{model}",
        pairs="results/converter/{model}/pairs_layer{layer}.safetensors",
        converter="results/converter/{model}/converter_layer{layer}_{arch}.pt",
    output:
        "results/converter/{model}/eval_layer{layer}_{arch}.parquet",
    log:
        "logs/converter/{model}/eval_layer{layer}_{arch}.log",
    benchmark:
        "results/benchmarks/converter/{model}/eval_layer{layer}_{arch}.tsv"
    wildcard_constraints:
        layer=r"-?\d+",
        arch="|".join(compression.CONVERTER_ARCHS),
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("eval_converter"),
    script:
        "../workflow/scripts/eval_converter.py"


rule recursive_demo:
    input:
        model="resources/models/{model}",
        corpus=f"resources/data/{config['recursive_demo']['corpus']}.parquet",
        converter=(
            f"results/converter/{{model}}/converter_layer{config['recursive_demo']['layer']}"
            f"_{config['recursive_demo']['arch']}.pt"
        ),
    output:
        ce="results/converter/{model}/recursive_demo.parquet",
        generations="results/converter/{model}/recursive_demo.jsonl",
    log:
        "logs/converter/{model}/recursive_demo.log",
    benchmark:
        "results/benchmarks/converter/{model}/recursive_demo.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        job=job("recursive_demo"),
    script:
        "../workflow/scripts/recursive_demo.py"


rule summarize_converter:
    input:
        evals=expand(
            "results/converter/{model}/eval_layer{layer}_{arch}.parquet",
            model=config["converter"]["models"],
            layer=config["converter"]["layers"],
            arch=config["converter"]["archs"],
        ),
        demo=expand(
            "results/converter/{model}/recursive_demo.parquet",
            model=config["converter"]["models"],
        ),
        curves=expand(
            "results/converter/{model}/converter_layer{layer}_{arch}_curve.parquet",
            model=config["converter"]["models"],
            layer=config["converter"]["layers"],
            arch=config["converter"]["archs"],
        ),
    output:
        **section_outputs(compression, "converter", "Converter"),
        summary="results/converter_summary.parquet",
        demo_summary="results/recursive_demo_summary.parquet",
    log:
        "logs/summarize_converter.log",
    benchmark:
        "results/benchmarks/summarize_converter.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/summarize_converter.py"
