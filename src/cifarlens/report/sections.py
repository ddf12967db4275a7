"""The report's context: the summary read once (View), the first screen and every section, in the explicit SECTION_BUILDERS table."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from markupsafe import Markup

from cifarlens._version import __version__
from cifarlens.figures.style import ARM_COLORS
from cifarlens.report.blocks import (
    Block,
    bullet_list,
    gh_slug,
    heading,
    note_block,
    paragraph,
    table_block,
)
from cifarlens.report.comparison import sec_comparison
from cifarlens.report.constants import (
    BROWSE_JS,
    BROWSE_JS_SHA256,
    COLLAPSED,
    NA,
    SECTIONS,
    STATUS_SHORT,
    UNSET,
)
from cifarlens.report.engine import engine_blocks
from cifarlens.report.first_screen import first_screen, sec_ablation, sec_replication
from cifarlens.report.formats import (
    _cap,
    _s,
    fmt_auc,
    fmt_dur,
    fmt_float,
    fmt_flops,
    fmt_int,
    fmt_params_m,
    fmt_pct,
    num,
)
from cifarlens.report.neighbours import sec_data_side
from cifarlens.report.notes import NOTES_FILE, notes_blocks
from cifarlens.report.robustness import sec_robustness
from cifarlens.report.sentences import (
    describe_border,
    describe_cost,
    describe_faithfulness,
    describe_mce,
    describe_temperature,
    describe_tracking,
    recipe_rows,
)
from cifarlens.report.verdict_blocks import (
    attribution_text,
    calibration_text,
    ece_interval_blocks,
    maps_of,
    superclass_blocks,
    superclass_text,
)
from cifarlens.report.verdicts import verdict_lead
from cifarlens.report.view import View
from cifarlens.study.browse import table_context
from cifarlens.study.schema import BootstrapDiff, Model, StudySummary, to_json


def _sec_summary(v: View) -> list[Block]:
    """1 Summary."""
    out: list[Block] = []
    summary_bits = [
        f"Changing one setting, {v.change_text}, and keeping every other setting fixed, "
        f"{v.accuracy_change()}.", *filter(None, [v.noise_text()]),
        calibration_text(v),
    ]
    if v.trk:
        summary_bits.append(describe_tracking(to_json(v.trk)))
    if v.generated:
        summary_bits.append(f"All numbers come from generated data, not {v.dataset}.")
    out.append(paragraph(" ".join(summary_bits), lead="Headline."))
    if v.notes.get("study"):
        out.append({"type": "notes", "items": [{"title": f"Notes on the study ({NOTES_FILE})",
                                                "paras": v.notes["study"], "id": "note-study",
                                                "rank": None}]})
    sb = v.seeds_block
    mean_rows = ([[f"Test top-1, mean over {v.n_seeds} seeds", fmt_pct(sb.mean_a),
                   fmt_pct(sb.mean_b)]] if v.seed_level else [])
    one = f" (seed {_s(v.pair_seed)})" if v.pair_seed is not None else ""
    out.append(table_block(
        ["Quantity", "Baseline", "Variant"],
        mean_rows +
        [[f"Test top-1{one}", fmt_pct(v.bt.top1), fmt_pct(v.vt.top1)],
         ["Test top-5", fmt_pct(v.bt.top5), fmt_pct(v.vt.top5)],
         ["Test macro-F1", fmt_pct(v.bt.macro_f1), fmt_pct(v.vt.macro_f1)],
         ["Test ECE", fmt_pct(v.bt.ece), fmt_pct(v.vt.ece)],
         ["Parameters", fmt_int(v.base.params), fmt_int(v.var.params)]],
        caption="Key numbers" + (f" (all rows but the first: the seed-{_s(v.pair_seed)} "
                                 "models)" if v.seed_level else "")))
    return out


def _sec_dataset(v: View) -> list[Block]:
    """2 Dataset."""
    out: list[Block] = []
    norm = v.s.normalization
    src = _s(v.s.data_source, "not recorded")
    out.append(paragraph(
        f"Dataset: {v.dataset} with {fmt_int(v.s.num_classes)} classes; source: {src}"
        + (" (the official archive)." if src == "official" else
           f" (a synthetic stand-in in the official format, NOT {v.dataset})." if v.generated
           else " (your own data in the CIFAR python format, every file checked against the "
                "checksums written when it was registered)." if v.user_data
           else ".")))
    used, train = num(v.split.train_used), num(v.split.train)
    rows = [["Train", fmt_int(v.split.train)],
            ["Validation", fmt_int(v.split.val)],
            ["Test", fmt_int(v.split.test)]]
    if used is not None:
        rows.append(["Train images used", fmt_int(used)])
    out.append(table_block(["Split", "Images"], rows, caption="Split sizes"))
    if used is not None and train is not None and used < train:
        out.append(note_block(f"Training used a class-balanced subset of {fmt_int(used)} of "
                         f"the {fmt_int(train)} training images."))
    mean, std = (norm.mean, norm.std) if norm else ([], [])
    if mean and std:
        chans = ["R", "G", "B"] if len(mean) == 3 else [str(i) for i in range(len(mean))]
        out.append(table_block(
            ["Channel", "Mean", "Std"],
            [[c, fmt_float(m, 4), fmt_float(s, 4)]
             for c, m, s in zip(chans, mean, std, strict=False)],
            caption="Normalization (computed on the training split)"))
    else:
        out.append(note_block("Normalization statistics were not recorded."))
    return out


def _sec_architecture(v: View) -> list[Block]:
    """3 Architecture."""
    out: list[Block] = []
    out.append(paragraph(
        f"Both models use the '{_s(v.cfg.get('model'))}' architecture"
        + (" unless the change itself is the model" if v.ckey == "model" else "")
        + f": {fmt_int(v.base.params)} parameters and "
        f"{fmt_flops(v.base.flops)} per 32×32 image (torch's FLOP counter, a "
        "multiply-add counts as two)."))
    out.append(table_block(
        ["Model", "Architecture", "Parameters", "FLOPs"],
        [["Baseline", _s(v.cfg.get("model")), fmt_int(v.base.params),
          fmt_flops(v.base.flops)],
         ["Variant", v.cvar if v.ckey == "model" else _s(v.cfg.get("model")),
          fmt_int(v.var.params), fmt_flops(v.var.flops)]],
        align="llrr"))
    return out


def _sec_training_setup(v: View) -> list[Block]:
    """4 Training setup."""
    out: list[Block] = []
    seeds = v.s.seeds
    out.append(paragraph(
        f"The variant differs from the baseline in exactly one setting: {v.change_text} "
        "(highlighted). Everything else, including the seed, is identical"
        + (f"; each arm ran with {len(seeds)} seeds ({', '.join(_s(x) for x in seeds)}), and "
           "seed s of the baseline and of the variant share the split and the initialization."
           if len(seeds) > 1 else ".")))
    out.append(heading("The seed report's recipe and what cifarlens adds"))
    out.append(paragraph(
        "The seed report names the optimizer, schedule, loss, batch size and epochs but not "
        "their values; cifarlens fills the gaps with common choices. These are cifarlens' "
        "choices, not the seed's recipe, and they can move the numbers."))
    out.append(table_block(
        ["Setting", "Seed report says", "This study used", "Why"],
        recipe_rows(v.cfg, v.env.precision, seeds or None, to_json(v.change)),
        align="llll", caption="Seed report vs this study (Why: cifarlens' reason)"))
    crow, hl = [], set()
    keys = list(v.cfg) + ([v.ckey] if v.ckey not in v.cfg and v.ckey != NA else [])
    for i, k in enumerate(keys):
        if k == v.ckey:
            hl.add(i)
            crow.append([k, _s(v.cfg.get(k, v.change.baseline), UNSET), v.cvar])
        else:
            crow.append([k, _s(v.cfg.get(k), UNSET), _s(v.cfg.get(k), UNSET)])
    if crow:
        out.append(table_block(["Setting", "Baseline", "Variant"], crow,
                          align="lll", highlight=hl, caption="Configuration"))
    else:
        out.append(note_block("The training configuration was not recorded."))
    out.append(table_block(
        ["Model", "Run", "Best epoch", "Training time"],
        [["Baseline", _s(v.base.run), _s(v.base.best_epoch),
          fmt_dur(v.base.train_time_s)],
         ["Variant", _s(v.var.run), _s(v.var.best_epoch),
          fmt_dur(v.var.train_time_s)]], align="llrr"))
    return out


def _sec_metrics(v: View) -> list[Block]:
    """5 Metrics."""
    out: list[Block] = []
    mrows = []
    for mname, m in (("Baseline", v.base), ("Variant", v.var)):
        for split_name in ("val", "test"):
            r = getattr(m, split_name)
            mrows.append([mname, split_name, fmt_float(r.loss), fmt_pct(r.top1),
                          fmt_pct(r.top5), fmt_pct(r.macro_f1), fmt_pct(r.ece)])
    out.append(table_block(["Model", "Split", "NLL", "Top-1", "Top-5", "Macro-F1", "ECE"],
                      mrows, align="llrrrrr",
                      caption="Validation and test metrics (best checkpoint; NLL: cross-entropy "
                              "without label smoothing, unlike the training curves' loss)"))
    out.append(paragraph(
        f"The baseline reaches {fmt_pct(v.bt.top1)} top-1 and "
        f"{fmt_pct(v.bt.top5)} top-5 test accuracy; the variant "
        f"{fmt_pct(v.vt.top1)} and "
        f"{fmt_pct(v.vt.top5)}."))
    out += v.figs("metrics", "curves")
    return out


def _sec_confusions(v: View) -> list[Block]:
    """6 Confusions."""
    out: list[Block] = []
    for mname, t in (("baseline", v.bt), ("variant", v.vt)):
        tc = (t.top_confusions or [])[:10]
        if tc:
            out.append(table_block(
                ["True class", "Predicted as", "Count", "Share of true class"],
                [[_s(c.true_name), _s(c.pred_name), fmt_int(c.count), fmt_pct(c.share_of_true)]
                 for c in tc],
                align="llrr", caption=f"Most confused pairs ({mname}, test)"))
        else:
            out.append(note_block(f"Top confused pairs were not computed for the {mname}."))
    out += v.figs("confusions", "confusion")
    out.append(heading("Superclasses"))
    scs = [(n, t.superclass) for n, t in (("baseline", v.bt), ("variant", v.vt))]
    if any(sc for _, sc in scs):
        out += superclass_blocks(scs)
        out += v.figs("confusions", "confusion_superclass")
    else:
        out.append(note_block(
            "Superclass analysis was not computed (your data defines no superclasses: its files "
            "have no coarse labels)." if v.user_data else
            "Superclass analysis was not computed (the dataset has no superclass labels, "
            "e.g. CIFAR-10)."))
    return out


def _sec_calibration(v: View) -> list[Block]:
    """7 Calibration."""
    out: list[Block] = []
    bc, vc = v.base.calibration, v.var.calibration

    def cal_val(m: Model, key: str, when: str) -> Any:
        value = getattr(m.calibration, f"{key}_{when}")
        if value is None and when == "before":  # a summary without it: the test metric is it
            value = getattr(m.test, key, None)
        return value

    crows = []
    for key, label, f in (("ece", "ECE", fmt_pct), ("mce", "MCE", fmt_pct),
                          ("mce_count", "Images in the MCE's bin", fmt_int),
                          ("nll", "NLL (test cross-entropy, no label smoothing)", fmt_float),
                          ("brier", "Brier", fmt_float)):
        crows.append([label] + [f(cal_val(m, key, w)) for m in (v.base, v.var)
                                for w in ("before", "after")])
    crows.append(["Temperature", fmt_float(bc.temperature, 2), "",
                  fmt_float(vc.temperature, 2), ""])
    out.append(table_block(
        ["Metric (test)", "Baseline before", "Baseline after", "Variant before", "Variant after"],
        crows, caption="Calibration before and after temperature scaling (fitted on validation)"))
    if any(r[2] == NA or r[4] == NA for r in crows[:5]):
        out.append(note_block("n/a: that number is not in this study's summary (older studies did "
                         "not carry it)."))
    out.append(paragraph(describe_mce([(n, to_json(c), w)
                                       for n, c in (("baseline", bc), ("variant", vc))
                                       for w in ("before", "after")])))
    for n, c in (("baseline", bc), ("variant", vc)):
        out.append(paragraph(describe_temperature(n, to_json(c))))
    out += ece_interval_blocks(v)
    out.append(paragraph(calibration_text(v)))
    out += v.figs("calibration", "reliability", "confidence_hist")
    return out


def confidence_basis(fails: dict[str, Any]) -> str:
    """How "confidence" was measured: temperature-scaled (with T) or raw softmax."""
    t = num(fails.get("temperature"))
    if t is not None:
        return (f"temperature-scaled probabilities (T = {fmt_float(t, 2)}, fitted on the "
                "validation split)")
    if fails.get("confidence_basis") is None:
        return "softmax probabilities (whether temperature-scaled was not recorded)"
    return "raw softmax probabilities (no fitted temperature was found)"


def describe_confident_errors(fails: dict[str, Any], n_test: Any = None) -> str:
    """Error counts and how many are confident, on which probabilities (raw count beside)."""
    thr = fmt_pct(fails.get("confident_threshold"))
    tw, cw = num(fails.get("total_wrong")), num(fails.get("confident_wrong"))
    raw = num(fails.get("confident_wrong_raw"))
    share = fmt_pct(cw / tw) if tw and cw is not None else NA
    n = num(n_test)
    text = (f"On the {_s(fails.get('split'), 'test')} split the baseline got {fmt_int(tw)}"
            + (f" of {fmt_int(n)}" if n else "")
            + f" images wrong; {fmt_int(cw)} of them ({share} of its errors) with confidence "
            f"≥ {thr} on {confidence_basis(fails)}")
    if raw is not None and num(fails.get("temperature")) is not None:
        text += f" ({fmt_int(raw)} on the raw, unscaled probabilities)"
    return text + (". These confident errors are the ones a user cannot catch from the "
                   "model's own confidence.")


def _sec_failure_cases(v: View) -> list[Block]:
    """8 Failure cases."""
    out: list[Block] = []
    tw = num(v.fails.total_wrong)
    if v.fails:
        out.append(paragraph(describe_confident_errors(to_json(v.fails), num(v.mc.n)
                                                       or num(v.split.test))))
        le = num(v.fails.label_error_suspects)
        if le is not None:
            # The count is over all errors (analysis/failures.py applies the rule to every one).
            shown = [f for f in v.top if f.label_error_suspect]
            cl = num(v.fails.cleanlab_issues)
            out.append(paragraph(
                f"{fmt_int(le)} of the {fmt_int(tw)} errors are flagged as label-error suspects "
                "(a confident-learning rule: the predicted class is as probable as that class "
                "usually is on its own images, and the given label gets at most 2%), so the "
                "image may be mislabelled rather than misclassified"
                + (f"; {len(shown)} of the {len(v.top)} failures listed below "
                   f"{'is' if len(shown) == 1 else 'are'}" if v.top
                   else "")
                + ". The rule is precise but misses most flips between confusable classes "
                "(measured on generated data in docs/analysis.md)"
                + (f"; cleanlab's wider confident-learning candidate list holds {fmt_int(cl)} of "
                   "the errors, for review rather than as a verdict." if cl is not None
                   else ".")))
    else:
        out.append(note_block("Failure analysis was not computed."))
    out += v.figs("failure-cases", "failure_gallery")
    if v.top:
        out.append(table_block(
            ["Rank", "Index", "True", "Predicted", "Confidence", "Raw confidence", "Margin",
             "P(true)", "True rank", "Label-error suspect"],
            [[_s(f.rank), _s(f.index), _s(f.true_name), _s(f.pred_name),
              fmt_pct(f.confidence), fmt_pct(f.raw_confidence), fmt_pct(f.margin),
              fmt_pct(f.true_prob), _s(f.true_rank),
              "yes" if f.label_error_suspect else "no"] for f in v.top],
            align="rrllrrrrrl",
            caption="The baseline's most confident failures, ranked by confidence on "
                    f"{confidence_basis(to_json(v.fails))} (raw confidence: unscaled softmax; margin: "
                    "top-1 minus top-2 probability; P(true): probability of the given label)"))
    pce = v.fails.per_class_confident_errors[:10]
    if pce and not any((num(x.count) or 0) >= 2 for x in pce):
        # no count here: it once read "the 10 listed" under the 12-row failures table above
        out.append(paragraph("No class has more than one confident error: each class with one has "
                      "only that one, so no class stands out."
                      if len(pce) > 1 else "Only one class has a confident error."))
    elif pce:
        out.append(table_block(
            ["True class", "Confident errors"],
            [[_s(x.name), fmt_int(x.count)] for x in pce],
            caption="Classes with the most confident errors"))
    return out


def _sec_grad_cam(v: View) -> list[Block]:
    """9 Grad-CAM."""
    out: list[Block] = []
    if v.explain:
        out.append(paragraph(
            f"Grad-CAM explains the predicted class at layer {_s(v.explain.layer)} for "
            f"{fmt_int(v.explain.explained)} images."))
        out += v.figs("grad-cam", "gradcam_failures")
        faith = v.explain.faithfulness
        ft = v.explain.faithfulness_tests
        if faith:
            labels = {"gradcam": "Grad-CAM order (reference images)",
                      "random": "Random order (same images)",
                      "failures": "Grad-CAM order, failures",
                      "correct": "Grad-CAM order, correct predictions"}
            out.append(heading("Faithfulness"))
            out.append(table_block(
                ["Pixel order", "Deletion AUC (lower = better)", "Insertion AUC (higher = better)"],
                [[labels.get(k, k), fmt_auc(r.deletion_auc), fmt_auc(r.insertion_auc)]
                 for k, r in faith.items()]))
            comps = ft.comparisons if ft else {}
            if comps:
                lvl = f"{(num(ft.level) or 0.95) * 100:g}%"
                out.append(table_block(
                    ["Baseline map (same images)", "Deletion AUC", f"Grad-CAM − baseline [{lvl} CI]",
                     "Insertion AUC", f"Grad-CAM − baseline [{lvl} CI]"],
                    [[_s(c.name), fmt_auc(c.deletion_auc), _diff_ci(c.deletion_diff),
                      fmt_auc(c.insertion_auc), _diff_ci(c.insertion_diff)]
                     for c in comps.values()],
                    caption="Grad-CAM against reference maps: i.i.d. random pixels, a smooth "
                            "random map at the layer's resolution (upsampled like the CAM), a "
                            "fixed centred Gaussian and, where computed, another image's "
                            "Grad-CAM map of the same class (image specificity); paired "
                            "bootstrap CIs over the images"))
            out.append(paragraph(describe_faithfulness(
                {k: to_json(a) for k, a in faith.items()}, to_json(ft) if ft else {},
                who=maps_of(v))))
        else:
            out.append(note_block("The faithfulness check was not computed."))
        out += v.figs("grad-cam", "deletion_insertion")
        bs = v.explain.border_share
        out.append(heading("Grad-CAM mass near the border"))
        if bs:
            out.append(table_block(
                ["Group", "Grad-CAM mass in the border band"],
                [["Failures", fmt_pct(bs.failures)],
                 ["Correct predictions", fmt_pct(bs.correct)],
                 ["Uniform map (reference)", fmt_pct(bs.uniform)],
                 ["Centre prior (reference)", fmt_pct(bs.centre_prior)]]))
        out.append(paragraph(describe_border(to_json(bs) if bs else {}, who=maps_of(v))))
        pg = v.explain.pointing_game
        if pg:
            on = f", measured on {_s(pg.on)}" if pg.on else ""
            out.append(paragraph(
                f"Pointing game: the Grad-CAM maximum falls inside the recorded object box for "
                f"{fmt_pct(pg.hit_rate)} of {fmt_int(pg.n)} images{on}."))
        else:
            out.append(note_block("The pointing game was not computed (it needs object boxes, "
                             "which only generated data records)."))
    else:
        out.append(note_block("Grad-CAM explanations were not computed for this study."))
        out += [b for b in v.figs("grad-cam") if b["type"] == "figure"]
    return out


def _diff_ci(d: BootstrapDiff | None) -> str:
    diff = num(d.diff) if d else None
    if diff is None:
        return NA
    lo, hi = num(d.lo), num(d.hi)
    ci = f" [{fmt_auc(lo)}, {fmt_auc(hi)}]" if lo is not None and hi is not None else ""
    return f"{diff:+.3f}{ci}"


def _sec_constrained_improvement(v: View) -> list[Block]:
    """10 Constrained improvement."""
    out: list[Block] = []
    out.append(paragraph(attribution_text(v)))
    out.append(paragraph(_cap(v.accuracy_change()) + "."))
    tracked = v.top
    if v.trk or tracked:
        out.append(paragraph(describe_tracking(to_json(v.trk))))
        out.append(table_block(
            ["Rank", "Index", "True", "Baseline prediction", "Baseline confidence",
             "Variant prediction", "Variant confidence", "Variant P(true)", "Outcome",
             "Label-error suspect"],
            [[_s(f.rank), _s(f.index), _s(f.true_name), _s(f.pred_name), fmt_pct(f.confidence),
              _s(f.variant.pred_name), fmt_pct(f.variant.confidence),
              fmt_pct(f.variant.true_prob),
              STATUS_SHORT.get(f.variant.status, _s(f.variant.status)),
              "yes" if f.label_error_suspect else "no"] for f in tracked],
            align="rrllrlrrnl",
            highlight={i for i, f in enumerate(tracked) if f.variant.status == "fixed"},
            caption="Each tracked baseline failure, re-evaluated by the variant (fixed rows "
                    "highlighted; still wrong: the same wrong class)"))
    else:
        out.append(note_block("Failure tracking was not computed."))
    out += notes_blocks(v)
    out += v.figs("constrained-improvement", "gradcam_tracking")
    return out


def _sec_complexity(v: View) -> list[Block]:
    """12 Complexity."""
    out: list[Block] = []
    out.append(table_block(
        ["Model", "Parameters", "Parameters (M)", "FLOPs"],
        [["Baseline CNN", fmt_int(v.base.params), fmt_params_m(v.base.params),
          fmt_flops(v.base.flops)],
         ["Variant CNN", fmt_int(v.var.params), fmt_params_m(v.var.params),
          fmt_flops(v.var.flops)]],
        caption="Model complexity (forward pass, one 32×32 image)"))
    out.append(paragraph(describe_cost(to_json(v.base), to_json(v.var), v.ckey, v.word())))
    return out


def _sec_reflection(v: View) -> list[Block]:
    """13 Reflection."""
    return [bullet_list(_reflection(v))]


def _sec_reproducibility(v: View) -> list[Block]:
    """14 Reproducibility."""
    out: list[Block] = []
    seeds_txt = ", ".join(_s(s) for s in v.s.seeds) or _s(v.cfg.get("seed"))
    rrows = [["Seed(s)", seeds_txt], ["Created", _s(v.s.created)]]
    rrows += [[_s(k), _s(val)] for k, val in to_json(v.env).items()]
    if v.s.timing and v.s.timing.total_s is not None:
        rrows.append(["Total time", fmt_dur(v.s.timing.total_s)])
    out.append(table_block(["Item", "Value"], rrows, align="ll", caption="Environment"))
    out += engine_blocks(v.s.engine)
    out.append({"type": "code", "label": "Command that produced this study:",
                "text": _s(v.s.command, "not recorded")})
    out.append({"type": "code", "label": "Rebuild this report without retraining:",
                "text": "cifarlens report " + shlex.quote(str(v.study_dir))})
    return out


# Each section of SECTIONS and the function that builds it, named here (not looked up by name).
SECTION_BUILDERS: dict[str, Any] = {
    "replication": sec_replication,
    "ablation": sec_ablation,
    "summary": _sec_summary,
    "dataset": _sec_dataset,
    "architecture": _sec_architecture,
    "training-setup": _sec_training_setup,
    "metrics": _sec_metrics,
    "confusions": _sec_confusions,
    "calibration": _sec_calibration,
    "failure-cases": _sec_failure_cases,
    "grad-cam": _sec_grad_cam,
    "data-side": sec_data_side,
    "constrained-improvement": _sec_constrained_improvement,
    "comparison": sec_comparison,
    "robustness": sec_robustness,
    "complexity": _sec_complexity,
    "reflection": _sec_reflection,
    "reproducibility": _sec_reproducibility,
}


def build_context(summary: StudySummary, study_dir: Path) -> dict[str, Any]:
    """All report content as plain, already-formatted strings, shared by both templates."""
    v = View(summary, study_dir)
    sections = []
    for sid, title in SECTIONS:
        blocks = SECTION_BUILDERS[sid](v)
        if blocks is None:  # the section does not apply to this study (ablation: 2+ changes)
            continue
        i = len(sections) + 1
        heading = f"{i} {title}"
        sections.append({"id": sid, "num": i, "title": title, "heading": heading,
                         "slug": gh_slug(heading), "blocks": blocks,
                         "open": sid not in COLLAPSED})
    if v.placed["appendix"]:
        heading = "Appendix: other figures"
        sections.append({"id": "appendix", "num": None, "title": heading, "heading": heading,
                         "slug": gh_slug(heading), "open": True,
                         "blocks": [{"type": "figure", "fig": f} for f in v.placed["appendix"]]})

    return {
        "browse": table_context(v.study_dir, v.s.browse.file if v.s.browse else None),
        "browse_js": Markup(BROWSE_JS),
        "script_hash": BROWSE_JS_SHA256,
        "title": _s(v.s.title, "cifarlens study"),
        "created": _s(v.s.created),
        # generated data is named as such here too, not as the dataset whose format it copies
        "subtitle": (f"generated data in the {v.dataset} format" if v.generated else v.dataset)
                    + f": baseline vs variant ({v.change_text})",
        "generated": v.generated,
        "dataset": v.dataset,
        "sections": sections,
        "answer": first_screen(v),
        "arm_colors": ARM_COLORS,
        "version": __version__,
    }


def _reflection(v: View) -> list[str]:
    """Observations generated from the numbers, in the seed report's reflection spirit."""
    bt, fails, explain = v.bt, v.fails, v.explain
    if v.seed_level:
        lead = verdict_lead(v.decision())
        out = [f"{lead}: with {v.change_text}, {v.accuracy_change()}."]
    else:
        out = [f"Nothing is concluded about the change yet: with {v.change_text}, "
               f"{v.accuracy_change()}."]
    out.append(calibration_text(v))
    if v.trk:
        out.append(describe_tracking(to_json(v.trk)))
    tw, cw, le = (num(x) for x in (fails.total_wrong, fails.confident_wrong,
                                   fails.label_error_suspects))
    if tw and cw is not None:
        out.append(f"{fmt_pct(cw / tw)} of the baseline's errors ({fmt_int(cw)} of "
                   f"{fmt_int(tw)}) come with confidence ≥ "
                   f"{fmt_pct(fails.confident_threshold)} on "
                   f"{confidence_basis(to_json(fails))}; these are the dangerous "
                   "failures in deployment, because nothing in the output flags them.")
    if le is not None and tw:
        out.append(f"{fmt_int(le)} of the baseline's {fmt_int(tw)} errors ({fmt_pct(le / tw)}) "
                   "are flagged as suspected label errors, so part of the measured error rate "
                   "may be the dataset's, not the model's." if le else
                   f"None of the baseline's {fmt_int(tw)} errors was flagged as a likely label "
                   "error.")
    bs = explain.border_share if explain else None
    if bs:
        out.append(describe_border(to_json(bs), who=maps_of(v)))
    else:
        out.append("Background reliance was not measured (no Grad-CAM border analysis).")
    sc = bt.superclass
    if sc:
        out.append(superclass_text("baseline", sc))
    if v.n_seeds == 2:
        out.append("With 2 seeds the t-test has 1 degree of freedom: its interval is wide and "
                   "it rarely detects anything; 3 or more seeds give a usable test.")
    if v.generated:
        out.append(f"These results come from GENERATED data, not {v.dataset}: they show that the "
                   "pipeline works, not how the models behave on real images.")
    return out
