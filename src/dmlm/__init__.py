"""dmlm-grid: discrete multimodal language models for speech recognition, as an experiment grid.

Stages (one subpackage each, data flows one way):
corpus -> noise -> tokens -> model (train) -> evaluation -> report.
"""

__version__ = "0.1.0"
