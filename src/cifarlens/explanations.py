"""Compatibility shim: the `cifarlens explain` stage moved to `cifarlens.explain`, its measures
to `cifarlens.cam_metrics` and layer lookup to `cifarlens.gradcam`. Kept so code that imports
`cifarlens.explanations.explain_run` (and the other names it held) keeps working.
"""

from __future__ import annotations

from .cam_metrics import BASELINE_NAMES, BORDER, border_summary, faithfulness
from .explain import TARGETS, explain_run, object_boxes
from .gradcam import _layer_name as _layer_name
from .gradcam import resolve_layer

__all__ = ["BASELINE_NAMES", "BORDER", "TARGETS", "border_summary", "explain_run",
           "faithfulness", "object_boxes", "resolve_layer"]
