# Report: per study, the WER of every run at every test SNR, the relative benefit (RB) of each
# modality set over audio only, a markdown table and plots.

localrules:
    report,


REPORT_CODE = ["report/metrics.py", "report/tables.py", "report/plots.py", "report/cli.py"]


def study_evals(wildcards):
    return EVALS[EVALS["study"] == wildcards.study]


def study_wer_files(wildcards):
    return [f"results/runs/{r.run}/eval/{r.cond}/wer.json" for r in study_evals(wildcards).itertuples()]


def study_train_logs(wildcards):
    return [f"results/runs/{run}/train_log.tsv" for run in study_evals(wildcards)["run"].unique()]


def report_settings(wildcards):
    evals = study_evals(wildcards).drop(columns=["study"])
    return as_json({"study": wildcards.study, "evals": evals.to_dict(orient="records")})


rule report:
    input:
        wer=study_wer_files,
        train_logs=study_train_logs,
    output:
        wer="results/report/{study}/wer.csv",
        rb="results/report/{study}/rb.csv",
        table="results/report/{study}/table.md",
        plot="results/report/{study}/rb.png",
    params:
        settings=report_settings,
        code=code_version(*REPORT_CODE),
    log:
        "results/logs/report/{study}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        dmlm_cmd("report") + " --runs-dir results/runs --out-dir results/report/{wildcards.study}"
        " > {log} 2>&1"
