"""Snakemake logger plugin ``dmlm``: config-file errors that name the file and line, and an
optional JSON-lines event log (``--logger dmlm``).

Why a logger plugin: Snakemake reads every ``--configfile`` while it builds its settings, before
any workflow code runs, and reports a YAML syntax error or an empty file without the file's name,
line or column ("Config file is not valid JSON or YAML", snakemake/snakemake#2439). The workflow
cannot catch that, but Snakemake imports every installed ``snakemake_logger_plugin_*`` package
while it builds its command line, which is before it reads the config files. Importing this
package wraps Snakemake's config-file reader: a file Snakemake reads fine is returned untouched;
when Snakemake fails on a file (or gets something other than a mapping), the file is read again
by ``dmlm.config.read_config_file`` and the error names the file, and for a syntax error the line
and column. ``scripts/setup.sh`` installs the project (and so this plugin) into the environment
that runs Snakemake.

``--logger dmlm`` additionally appends each Snakemake log record as one JSON object per line to
``--logger-dmlm-path`` (default ``results/logs/snakemake-events.jsonl``), for tools that follow a
run (job started / finished / failed) without parsing Snakemake's text output.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from logging import LogRecord
from pathlib import Path
from typing import Optional

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase


def _wrap_config_reader() -> None:
    from snakemake.common import configfile
    from snakemake_interface_common.exceptions import WorkflowError

    original = configfile._load_configfile
    if getattr(original, "_dmlm_wrapped", False):
        return

    def named_error(path) -> WorkflowError | None:
        from dmlm.config import read_config_file
        from dmlm.errors import DmlmError

        try:
            read_config_file(path)
        except DmlmError as err:
            return WorkflowError(f"Config file {err}" if str(err).startswith(str(path)) else str(err))
        return None

    def load_configfile(configpath_or_obj, filetype="Config"):
        is_path = isinstance(configpath_or_obj, (str, Path)) and filetype == "Config"
        if is_path and not Path(configpath_or_obj).exists():  # Snakemake prints a bare traceback
            raise WorkflowError(
                f"Config file {configpath_or_obj}: no such file (--configfile reads every word after it "
                "as a config file: put targets before --configfile)")
        try:
            config = original(configpath_or_obj, filetype)
        except WorkflowError:
            if is_path and Path(configpath_or_obj).is_file():
                err = named_error(configpath_or_obj)
                if err is not None:
                    raise err from None
            raise
        if is_path and not isinstance(config, dict):  # e.g. an empty file: Snakemake names no file
            err = named_error(configpath_or_obj)
            if err is not None:
                raise err
        return config

    load_configfile._dmlm_wrapped = True
    configfile._load_configfile = load_configfile


_wrap_config_reader()


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    path: Optional[str] = field(
        default=None,
        metadata={"help": "JSON-lines file the dmlm logger appends to "
                          "(default: results/logs/snakemake-events.jsonl)"},
    )


class LogHandler(LogHandlerBase):
    """One JSON object per Snakemake log record: time, level, event (job_info, job_finished,
    job_error, ...), message, and the record's job fields where it has them."""

    FIELDS = ("jobid", "rule_name", "wildcards", "output", "log")

    def __post_init__(self) -> None:
        path = getattr(self.settings, "path", None) or "results/logs/snakemake-events.jsonl"
        # absolute now: Snakemake builds its handlers before it enters --directory
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.baseFilename = str(self.path)  # Snakemake lists file handlers' files by it

    def emit(self, record: LogRecord) -> None:
        try:
            event = getattr(record, "event", None)
            entry = {"time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds"),
                     "level": record.levelname,
                     "event": str(getattr(event, "value", event) or "message"),
                     "message": record.getMessage() if record.msg is not None else ""}
            for name in self.FIELDS:
                value = getattr(record, name, None)
                if value not in (None, "", [], {}):
                    entry[name] = value if isinstance(value, (str, int, bool)) else str(value)
            with open(self.path, "a", encoding="utf-8") as f:  # one write per line: safe to follow
                f.write(json.dumps(entry) + "\n")
        except Exception:  # a logging error must not stop Snakemake's logging thread
            self.handleError(record)

    @property
    def writes_to_stream(self) -> bool:
        return False

    @property
    def writes_to_file(self) -> bool:
        return True

    @property
    def has_filter(self) -> bool:
        return False

    @property
    def has_formatter(self) -> bool:
        return False

    @property
    def needs_rulegraph(self) -> bool:
        return False
