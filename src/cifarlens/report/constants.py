"""The report's constants: thresholds, section and figure tables, fixed wording."""


from __future__ import annotations

import base64
import hashlib
from pathlib import Path

ALPHA = 0.05
NA = "n/a"
UNSET = "not set"  # a config value of None
MAX_FIGURE_BYTES = 25 * 1024 * 1024  # a bigger "figure" is surely not one of ours
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Embedding (measured on the 3-seed demo, docs/report.md): photo-like grids as JPEG, at most
# PHOTO_MAX_WIDTH px wide (their content is 32 px images blown up, so nothing is lost), and line
# plots / heatmaps as 256-colour palette PNGs (99% of pixels within 4/255 of the original).
PHOTO_FIGURES = frozenset({"failure_gallery", "gradcam_failures", "gradcam_tracking"})
PHOTO_MAX_WIDTH = 800
JPEG_QUALITY = 85
# The figures the first screen shows (each embedded there only; its section points to it).
FIRST_SCREEN_FIGURES = ("curves", "gradcam_tracking")

# (anchor id, title): order and wording are the report's table of contents.
SECTIONS: list[tuple[str, str]] = [
    ("replication", "Seed report side by side"),
    ("ablation", "Every change against the baseline"),  # only with 2+ changes
    ("summary", "Summary"),
    ("dataset", "Dataset"),
    ("architecture", "Architecture"),
    ("training-setup", "Training setup"),
    ("metrics", "Metrics"),
    ("confusions", "Confusions"),
    ("calibration", "Calibration"),
    ("failure-cases", "Failure cases"),
    ("grad-cam", "Grad-CAM"),
    ("data-side", "The data side of the failures"),  # only where the summary has it
    ("constrained-improvement", "Constrained improvement"),
    ("comparison", "Comparison & statistics"),
    ("robustness", "Robustness to common corruptions"),  # only with study --robustness
    ("complexity", "Complexity"),
    ("reflection", "Reflection"),
    ("reproducibility", "Reproducibility"),
]

# Sections collapsed in the HTML (<details> closed): the details a reader opens on demand. The
# first screen above them answers the question; Markdown shows every section, in this order.
COLLAPSED = frozenset({"replication", "dataset", "architecture", "training-setup",
                       "calibration", "grad-cam", "complexity", "reproducibility"})

# figure key -> (section id, caption). Unknown keys go to an appendix section.
FIGURES: dict[str, tuple[str, str]] = {
    "curves": ("metrics", "Training and validation loss and accuracy per epoch"),
    "confusion": ("confusions", "Confusion matrix of the baseline on the test split"),
    "confusion_superclass": ("confusions", "Confusions aggregated to the superclasses"),
    "reliability": ("calibration", "Reliability diagram: accuracy against confidence"),
    "confidence_hist": ("calibration", "Confidence histograms of right and wrong predictions"),
    "failure_gallery": ("failure-cases", "The baseline's most confident test failures"),
    "gradcam_failures": ("grad-cam", "Grad-CAM of the baseline's most confident failures. In "
                         "the \"evidence for the true class\" panels, black means no evidence "
                         "for that class (the map is zero there), not a missing image"),
    "deletion_insertion": ("grad-cam", "Deletion and insertion curves: Grad-CAM vs random order"),
    "gradcam_tracking": (
        "constrained-improvement",
        "The same failures side by side: baseline and variant Grad-CAM (each model on its own "
        "colour scale, its 99th percentile; strengths do not compare across models)",
    ),
    "confusion_difference": ("comparison", "Confusion difference (variant minus baseline)"),
    "per_class_changes": ("comparison", "Per-class accuracy change (variant minus baseline)"),
    "robustness": ("robustness", "Accuracy against corruption severity per family, baseline and "
                   "variant (mean over seeds; thin lines: each corruption; severity 0: clean)"),
}

DATASET_NAMES = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10"}


# In the tracking table: short, so the column does not wrap into four lines (the caption says
# what each means).
STATUS_SHORT = {"fixed": "fixed", "still_wrong": "still wrong", "other_wrong": "other wrong class"}
STATUS_TEXT = {
    "fixed": "fixed",
    "still_wrong": "still wrong (same class)",
    "other_wrong": "changed to another wrong class",
}
METHOD_TEXT = {
    "paired_wald": "paired Wald",
    "paired_bootstrap_percentile": "paired bootstrap (percentile)",
    "paired_t": "paired t-test over seeds",
}

_TEMPLATES = Path(__file__).parent.parent / "templates"  # src/cifarlens/templates
# The report's only script (sorting and filtering the failure browser): our own file, allowed by
# the content security policy through its hash, so no other script can run in the page.
BROWSE_JS = (_TEMPLATES / "browse.js").read_text(encoding="utf-8")
BROWSE_JS_SHA256 = base64.b64encode(hashlib.sha256(BROWSE_JS.encode("utf-8")).digest()).decode()


