# dmlm-grid: multimodal speech recognition with decoder-only LMs, as an experiment grid.
# config -> corpus -> noise -> tokens -> runs (train) -> evaluation -> report
from snakemake.utils import min_version

min_version("9.0")


# A preset given with --configfile is the whole config. Snakemake would merge it key by key into
# the `configfile:` below (unless --replace-workflow-config), so the default preset is read only when
# the command line names no config file; --config key=value still applies on top either way.
if not workflow.overwrite_configfiles:

    configfile: "workflow_config.yaml"


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/noise.smk"
include: "rules/tokens.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        all_reports(),
