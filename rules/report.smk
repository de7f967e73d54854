# Report: per study, the WER of every run at every test SNR, the relative benefit (RB) of each
# modality set over audio only and the perceptual score of each extra modality, with bootstrap
# CIs; decoding speed; summary.md (tables and one sentence per analysis) and figures. Outputs
# flagged with report() go into `snakemake --report results/report.html`, captioned by
# rules/captions/*.rst.

from dmlm.report.settings import permuted_evals, report_settings


localrules:
    report,


CAPTIONS = "captions"  # relative to this file


def study_records(wildcards):
    return _study_records(wildcards.study)


@functools.cache
def _study_records(study):
    # three input functions ask per study; callers must not modify the records
    return EVALS[EVALS["study"] == study].to_dict(orient="records")


def study_eval_files(wildcards):
    return [f"results/runs/{r['run']}/eval/{r['cond']}/{name}"
            for r in study_records(wildcards) for name in ("wer.json", "hyps.tsv")]


def study_permuted_files(wildcards):
    """The perceptual evaluations: each extra modality of each multimodal run, at each test SNR."""
    return [f"results/runs/{r['run']}/eval/{r['cond']}/perm-{r['permuted']}/{name}"
            for r in permuted_evals(study_records(wildcards)) for name in ("wer.json", "hyps.tsv")]


def study_train_logs(wildcards):
    return [f"results/runs/{run}/train_log.tsv" for run in dict.fromkeys(r["run"] for r in study_records(wildcards))]


def figure(name, caption):
    return report(f"results/report/{{study}}/{name}", caption=f"{CAPTIONS}/{caption}.rst",
                  category="{study}", subcategory="figures")


def table(name, caption):
    return report(f"results/report/{{study}}/{name}", caption=f"{CAPTIONS}/{caption}.rst",
                  category="{study}", subcategory="tables")


rule report:
    input:
        evals=study_eval_files,
        permuted=study_permuted_files,
        train_logs=study_train_logs,
    output:
        wer=table("wer.csv", "wer_csv"),
        rb=table("rb.csv", "rb_csv"),
        perceptual=table("perceptual.csv", "perceptual_csv"),
        speed=table("speed.csv", "speed_csv"),
        contrasts=table("contrasts.csv", "contrasts_csv"),
        summary=table("summary.md", "summary"),
        rb_plot=figure("rb.png", "rb"),
        heatmap=figure("wer_heatmap.png", "wer_heatmap"),
        perceptual_plot=figure("perceptual.png", "perceptual"),
        training=figure("training.png", "training"),
        contrasts_plot=figure("contrasts.png", "contrasts"),
    params:
        settings=lambda wildcards: as_json(report_settings(config, wildcards.study)),
        code=code_version("report", "run"),
    log:
        "results/logs/report/{study}.log",
    benchmark:
        "results/benchmarks/report/{study}.tsv"
    threads: 1
    resources:
        # measured: 0.73 GB, 5 s on the default preset's study (4 runs x 4 SNRs x 200 utterances,
        # 1000 bootstrap resamples); imports dominate the memory
        mem_mb=1000,
        runtime=5,
    shell:
        dmlm_cmd("report") + " --runs-dir results/runs --out-dir results/report/{wildcards.study}"
        " > {log} 2>&1"
