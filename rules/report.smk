rule plot_cramming:
    input:
        samples=cram_results(".parquet"),
        summary="results/cramming_summary.parquet",
    output:
        steps=report(
            "results/figures/accuracy_vs_steps.png",
            caption="../report/accuracy_vs_steps.rst",
            category="Cramming",
        ),
        lengths=report(
            "results/figures/tf_vs_greedy.png",
            caption="../report/tf_vs_greedy.rst",
            category="Cramming",
        ),
        steps_pdf="results/figures/accuracy_vs_steps.pdf",
        lengths_pdf="results/figures/tf_vs_greedy.pdf",
    log:
        "logs/plot_cramming.log",
    benchmark:
        "results/benchmarks/plot_cramming.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/plot_cramming.py"


rule render_report:
    input:
        unpack(lambda wildcards: report_inputs()),
    output:
        "results/table.tex",
    log:
        "logs/render_report.log",
    benchmark:
        "results/benchmarks/render_report.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/render_report.py"


rule compile_report:
    input:
        table="results/table.tex",
        figures=report_figures(),
    output:
        report(
            "results/report.pdf", caption="../report/report_pdf.rst", category="Report"
        ),
    log:
        "logs/compile_report.log",
    benchmark:
        "results/benchmarks/compile_report.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/compile_report.py"
