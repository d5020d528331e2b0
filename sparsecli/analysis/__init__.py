"""What we say about a layout: the report's figures (``report``), how many stacked layers until
every query block has seen every key block (``reach``), and the heatmaps (``plot``).

``sparsecli.analysis.analyze_config`` and the report's other public names resolve lazily from
``report``, so importing this package (or ``reach``) does not import torch.
"""
from importlib import import_module


def __getattr__(name):
    if not name.startswith("_"):
        report = import_module(".report", __name__)
        if hasattr(report, name):
            return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
