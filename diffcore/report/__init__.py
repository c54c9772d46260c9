"""Reports: the data model (model.py) and its views: text, JSON, HTML, plots."""
from .model import SCHEMA_VERSION, DiffReport, LayerRow, Unmatched

__all__ = ["DiffReport", "LayerRow", "Unmatched", "SCHEMA_VERSION"]
