rule render_report:
    input:
        section_inputs(),
    output:
        document="results/report.tex",
        provenance="results/provenance.yaml",
    log:
        "logs/render_report.log",
    benchmark:
        "results/benchmarks/render_report.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/render_report.py"


rule document_results:
    input:
        sections=section_inputs(),
        provenance="results/provenance.yaml",
    output:
        "docs/results.md",
    log:
        "logs/document_results.log",
    benchmark:
        "results/benchmarks/document_results.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/document_results.py"


rule compile_report:
    input:
        document="results/report.tex",
        figures=section_figures("pdf"),
    output:
        report(
            "results/report.pdf", caption="../report/report_pdf.rst", category="Report"
        ),
    log:
        "logs/compile_report.log",
    benchmark:
        "results/benchmarks/compile_report.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/compile_report.py"


rule effective_config:
    output:
        "results/config.yaml",
    log:
        "logs/effective_config.log",
    benchmark:
        "results/benchmarks/effective_config.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        config=canonical(config),
    script:
        "../workflow/scripts/effective_config.py"
