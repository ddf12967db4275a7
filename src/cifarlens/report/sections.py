"""The report's context: the summary read once (View), the first screen and every section, in the explicit SECTION_BUILDERS table."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from markupsafe import Markup

from cifarlens.analysis.intervals import newcombe_diff_ci
from cifarlens.report.blocks import (
    Block,
    bullet_list,
    gh_slug,
    heading,
    note_block,
    paragraph,
    table_block,
)
from cifarlens.report.constants import (
    ALPHA,
    BROWSE_JS,
    BROWSE_JS_SHA256,
    COLLAPSED,
    METHOD_TEXT,
    NA,
    SECTIONS,
    STATUS_SHORT,
    UNSET,
)
from cifarlens.report.first_screen import VERDICT_LEAD, first_screen, sec_ablation, sec_replication
from cifarlens.report.formats import (
    _alpha_text,
    _cap,
    _d,
    _l,
    _s,
    first_set,
    fmt_auc,
    fmt_dur,
    fmt_float,
    fmt_flops,
    fmt_int,
    fmt_p,
    fmt_params_m,
    fmt_pct,
    fmt_points,
    num,
    p_clause,
)
from cifarlens.report.notes import NOTES_FILE, notes_blocks
from cifarlens.report.sentences import (
    NOISE_PAIR,
    describe_border,
    describe_calibration_change,
    describe_cost,
    describe_faithfulness,
    describe_mce,
    describe_seeds,
    describe_superclass,
    describe_temperature,
    describe_tracking,
    recipe_rows,
)
from cifarlens.report.view import View


def _sec_summary(v: View) -> list[Block]:
    """1 Summary."""
    out: list[Block] = []
    summary_bits = [
        f"Changing one setting, {v.change_text}, and keeping every other setting fixed, "
        f"{v.accuracy_change()}.", *filter(None, [v.noise_text()]),
        describe_calibration_change(v.bt.get("ece"), v.vt.get("ece"), v.comp.get("ece_change")),
    ]
    if v.trk:
        summary_bits.append(describe_tracking(v.trk))
    if v.generated:
        summary_bits.append(f"All numbers come from generated data, not {v.dataset}.")
    out.append(paragraph(" ".join(summary_bits), lead="Headline."))
    if v.notes.get("study"):
        out.append({"type": "notes", "items": [{"title": f"Notes on the study ({NOTES_FILE})",
                                                "paras": v.notes["study"], "id": "note-study",
                                                "rank": None}]})
    sb = _d(v.seeds_block)
    mean_rows = ([[f"Test top-1, mean over {v.n_seeds} seeds", fmt_pct(sb.get("mean_a")),
                   fmt_pct(sb.get("mean_b"))]] if v.seed_level else [])
    one = f" (seed {_s(v.pair_seed)})" if v.pair_seed is not None else ""
    out.append(table_block(
        ["Quantity", "Baseline", "Variant"],
        mean_rows +
        [[f"Test top-1{one}", fmt_pct(v.bt.get("top1")), fmt_pct(v.vt.get("top1"))],
         ["Test top-5", fmt_pct(v.bt.get("top5")), fmt_pct(v.vt.get("top5"))],
         ["Test macro-F1", fmt_pct(v.bt.get("macro_f1")), fmt_pct(v.vt.get("macro_f1"))],
         ["Test ECE", fmt_pct(v.bt.get("ece")), fmt_pct(v.vt.get("ece"))],
         ["Parameters", fmt_int(v.base.get("params")), fmt_int(v.var.get("params"))]],
        caption="Key numbers" + (f" (all rows but the first: the seed-{_s(v.pair_seed)} "
                                 "models)" if v.seed_level else "")))
    return out


def _sec_dataset(v: View) -> list[Block]:
    """2 Dataset."""
    out: list[Block] = []
    norm = _d(v.sm.get("normalization"))
    src = _s(v.sm.get("data_source"), "not recorded")
    out.append(paragraph(
        f"Dataset: {v.dataset} with {fmt_int(v.sm.get('num_classes'))} classes; source: {src}"
        + (" (the official archive)." if src == "official" else
           f" (a synthetic stand-in in the official format, NOT {v.dataset})." if v.generated
           else " (your own data in the CIFAR python format, every file checked against the "
                "checksums written when it was registered)." if v.user_data
           else ".")))
    used, train = num(v.split.get("train_used")), num(v.split.get("train"))
    rows = [["Train", fmt_int(v.split.get("train"))],
            ["Validation", fmt_int(v.split.get("val"))],
            ["Test", fmt_int(v.split.get("test"))]]
    if used is not None:
        rows.append(["Train images used", fmt_int(used)])
    out.append(table_block(["Split", "Images"], rows, caption="Split sizes"))
    if used is not None and train is not None and used < train:
        out.append(note_block(f"Training used a class-balanced subset of {fmt_int(used)} of "
                         f"the {fmt_int(train)} training images."))
    mean, std = _l(norm.get("mean")), _l(norm.get("std"))
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
        + f": {fmt_int(v.base.get('params'))} parameters and "
        f"{fmt_flops(v.base.get('flops'))} per 32×32 image (torch's FLOP counter, a "
        "multiply-add counts as two)."))
    out.append(table_block(
        ["Model", "Architecture", "Parameters", "FLOPs"],
        [["Baseline", _s(v.cfg.get("model")), fmt_int(v.base.get("params")),
          fmt_flops(v.base.get("flops"))],
         ["Variant", v.cvar if v.ckey == "model" else _s(v.cfg.get("model")),
          fmt_int(v.var.get("params")), fmt_flops(v.var.get("flops"))]],
        align="llrr"))
    return out


def _sec_training_setup(v: View) -> list[Block]:
    """4 Training setup."""
    out: list[Block] = []
    seeds = _l(v.sm.get("seeds"))
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
        recipe_rows(v.cfg, v.env.get("precision"), seeds or None, v.change),
        align="llll", caption="Seed report vs this study (Why: cifarlens' reason)"))
    crow, hl = [], set()
    keys = list(v.cfg) + ([v.ckey] if v.ckey not in v.cfg and v.ckey != NA else [])
    for i, k in enumerate(keys):
        if k == v.ckey:
            hl.add(i)
            crow.append([k, _s(v.cfg.get(k, v.change.get("baseline")), UNSET), v.cvar])
        else:
            crow.append([k, _s(v.cfg.get(k), UNSET), _s(v.cfg.get(k), UNSET)])
    if crow:
        out.append(table_block(["Setting", "Baseline", "Variant"], crow,
                          align="lll", highlight=hl, caption="Configuration"))
    else:
        out.append(note_block("The training configuration was not recorded."))
    out.append(table_block(
        ["Model", "Run", "Best epoch", "Training time"],
        [["Baseline", _s(v.base.get("run")), _s(v.base.get("best_epoch")),
          fmt_dur(v.base.get("train_time_s"))],
         ["Variant", _s(v.var.get("run")), _s(v.var.get("best_epoch")),
          fmt_dur(v.var.get("train_time_s"))]], align="llrr"))
    return out


def _sec_metrics(v: View) -> list[Block]:
    """5 Metrics."""
    out: list[Block] = []
    mrows = []
    for mname, m in (("Baseline", v.base), ("Variant", v.var)):
        for split_name in ("val", "test"):
            r = _d(m.get(split_name))
            mrows.append([mname, split_name, fmt_float(r.get("loss")), fmt_pct(r.get("top1")),
                          fmt_pct(r.get("top5")), fmt_pct(r.get("macro_f1")),
                          fmt_pct(r.get("ece"))])
    out.append(table_block(["Model", "Split", "NLL", "Top-1", "Top-5", "Macro-F1", "ECE"],
                      mrows, align="llrrrrr",
                      caption="Validation and test metrics (best checkpoint; NLL: cross-entropy "
                              "without label smoothing, unlike the training curves' loss)"))
    out.append(paragraph(
        f"The baseline reaches {fmt_pct(v.bt.get('top1'))} top-1 and "
        f"{fmt_pct(v.bt.get('top5'))} top-5 test accuracy; the variant "
        f"{fmt_pct(v.vt.get('top1'))} and "
        f"{fmt_pct(v.vt.get('top5'))}."))
    out += v.figs("metrics", "curves")
    return out


def _sec_confusions(v: View) -> list[Block]:
    """6 Confusions."""
    out: list[Block] = []
    for mname, t in (("baseline", v.bt), ("variant", v.vt)):
        tc = _l(t.get("top_confusions"))[:10]
        if tc:
            out.append(table_block(
                ["True class", "Predicted as", "Count", "Share of true class"],
                [[_s(c.get("true_name")), _s(c.get("pred_name")), fmt_int(c.get("count")),
                  fmt_pct(c.get("share_of_true"))] for c in map(_d, tc)],
                align="llrr", caption=f"Most confused pairs ({mname}, test)"))
        else:
            out.append(note_block(f"Top confused pairs were not computed for the {mname}."))
    out += v.figs("confusions", "confusion")
    out.append(heading("Superclasses"))
    scs = [(n, _d(t.get("superclass"))) for n, t in (("baseline", v.bt), ("variant", v.vt))]
    if any(sc for _, sc in scs):
        out.append(table_block(
            ["Model", "Coarse accuracy", "Errors within superclass", "Chance share",
             "Binomial p"],
            [[_cap(n), fmt_pct(sc.get("coarse_accuracy")),
              fmt_pct(sc.get("within_superclass_share")), fmt_pct(sc.get("chance_share")),
              fmt_p(sc.get("binomial_p"))]
             for n, sc in scs if sc], align="lrrrr",
            caption="Errors whose prediction stays in the true superclass, against a uniformly "
                    "random wrong class (two-sided exact binomial test over test images)"))
        for n, sc in scs:
            if sc:
                out.append(paragraph(describe_superclass(n, sc)))
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
    bc, vc = _d(v.base.get("calibration")), _d(v.var.get("calibration"))

    def cal_val(m: dict[str, Any], c: dict[str, Any], key: str, when: str) -> Any:
        if when == "before":
            return c.get(f"{key}_before", _d(m.get("test")).get(key))
        return c.get(f"{key}_after")

    crows = []
    for key, label, f in (("ece", "ECE", fmt_pct), ("mce", "MCE", fmt_pct),
                          ("mce_count", "Images in the MCE's bin", fmt_int),
                          ("nll", "NLL (test cross-entropy, no label smoothing)", fmt_float),
                          ("brier", "Brier", fmt_float)):
        crows.append([label] + [f(cal_val(m, c, key, w)) for m, c in ((v.base, bc), (v.var, vc))
                                for w in ("before", "after")])
    crows.append(["Temperature", fmt_float(bc.get("temperature"), 2), "",
                  fmt_float(vc.get("temperature"), 2), ""])
    out.append(table_block(
        ["Metric (test)", "Baseline before", "Baseline after", "Variant before", "Variant after"],
        crows, caption="Calibration before and after temperature scaling (fitted on validation)"))
    if any(r[2] == NA or r[4] == NA for r in crows[:5]):
        out.append(note_block("n/a: that number is not in this study's summary (older studies did "
                         "not carry it)."))
    out.append(paragraph(describe_mce([(n, c, w) for n, c in (("baseline", bc), ("variant", vc))
                                for w in ("before", "after")])))
    for n, c in (("baseline", bc), ("variant", vc)):
        out.append(paragraph(describe_temperature(n, c)))
    out.append(paragraph(describe_calibration_change(v.bt.get("ece"), v.vt.get("ece"),
                                              v.comp.get("ece_change"))))
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
    tw = num(v.fails.get("total_wrong"))
    if v.fails:
        out.append(paragraph(describe_confident_errors(v.fails, num(v.mc.get("n"))
                                                or num(v.split.get("test")))))
        le = num(v.fails.get("label_error_suspects"))
        if le is not None:
            # The count is over all errors (failures.py applies the rule to every one).
            shown = [f for f in v.top if f.get("label_error_suspect")]
            cl = num(v.fails.get("cleanlab_issues"))
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
            [[_s(f.get("rank")), _s(f.get("index")), _s(f.get("true_name")),
              _s(f.get("pred_name")), fmt_pct(f.get("confidence")),
              fmt_pct(f.get("raw_confidence")), fmt_pct(f.get("margin")),
              fmt_pct(f.get("true_prob")), _s(f.get("true_rank")),
              "yes" if f.get("label_error_suspect") else "no"] for f in v.top],
            align="rrllrrrrrl",
            caption="The baseline's most confident failures, ranked by confidence on "
                    f"{confidence_basis(v.fails)} (raw confidence: unscaled softmax; margin: "
                    "top-1 minus top-2 probability; P(true): probability of the given label)"))
    pce = [_d(x) for x in _l(v.fails.get("per_class_confident_errors"))][:10]
    if pce and not any((num(x.get("count")) or 0) >= 2 for x in pce):
        # no count here: it once read "the 10 listed" under the 12-row failures table above
        out.append(paragraph("No class has more than one confident error: each class with one has "
                      "only that one, so no class stands out."
                      if len(pce) > 1 else "Only one class has a confident error."))
    elif pce:
        out.append(table_block(
            ["True class", "Confident errors"],
            [[_s(x.get("name")), fmt_int(x.get("count"))] for x in pce],
            caption="Classes with the most confident errors"))
    return out


def _sec_grad_cam(v: View) -> list[Block]:
    """9 Grad-CAM."""
    out: list[Block] = []
    if v.explain:
        out.append(paragraph(
            f"Grad-CAM explains the predicted class at layer {_s(v.explain.get('layer'))} for "
            f"{fmt_int(v.explain.get('explained'))} images."))
        out += v.figs("grad-cam", "gradcam_failures")
        faith = _d(v.explain.get("faithfulness"))
        ft = _d(v.explain.get("faithfulness_tests"))
        if faith:
            labels = {"gradcam": "Grad-CAM order (reference images)",
                      "random": "Random order (same images)",
                      "failures": "Grad-CAM order, failures",
                      "correct": "Grad-CAM order, correct predictions"}
            out.append(heading("Faithfulness"))
            out.append(table_block(
                ["Pixel order", "Deletion AUC (lower = better)", "Insertion AUC (higher = better)"],
                [[labels.get(k, k), fmt_auc(_d(r).get("deletion_auc")),
                  fmt_auc(_d(r).get("insertion_auc"))] for k, r in faith.items()]))
            comps = _d(ft.get("comparisons"))
            if comps:
                lvl = f"{(num(ft.get('level')) or 0.95) * 100:g}%"
                out.append(table_block(
                    ["Baseline map (same images)", "Deletion AUC", f"Grad-CAM − baseline [{lvl} CI]",
                     "Insertion AUC", f"Grad-CAM − baseline [{lvl} CI]"],
                    [[_s(_d(c).get("name")), fmt_auc(_d(c).get("deletion_auc")),
                      _diff_ci(_d(_d(c).get("deletion_diff"))),
                      fmt_auc(_d(c).get("insertion_auc")),
                      _diff_ci(_d(_d(c).get("insertion_diff")))] for c in comps.values()],
                    caption="Grad-CAM against maps that know nothing about the image: i.i.d. "
                            "random pixels, a smooth random map at the layer's resolution "
                            "(upsampled like the CAM) and a fixed centred Gaussian; paired "
                            "bootstrap CIs over the images"))
            out.append(paragraph(describe_faithfulness(faith, ft)))
        else:
            out.append(note_block("The faithfulness check was not computed."))
        out += v.figs("grad-cam", "deletion_insertion")
        bs = _d(v.explain.get("border_share"))
        out.append(heading("Grad-CAM mass near the border"))
        if bs:
            out.append(table_block(
                ["Group", "Grad-CAM mass in the border band"],
                [["Failures", fmt_pct(bs.get("failures"))],
                 ["Correct predictions", fmt_pct(bs.get("correct"))],
                 ["Uniform map (reference)", fmt_pct(bs.get("uniform"))],
                 ["Centre prior (reference)", fmt_pct(bs.get("centre_prior"))]]))
        out.append(paragraph(describe_border(bs)))
        pg = _d(v.explain.get("pointing_game"))
        if pg:
            on = f", measured on {_s(pg.get('on'))}" if pg.get("on") else ""
            out.append(paragraph(
                f"Pointing game: the Grad-CAM maximum falls inside the recorded object box for "
                f"{fmt_pct(pg.get('hit_rate'))} of {fmt_int(pg.get('n'))} images{on}."))
        else:
            out.append(note_block("The pointing game was not computed (it needs object boxes, "
                             "which only generated data records)."))
    else:
        out.append(note_block("Grad-CAM explanations were not computed for this study."))
        out += [b for b in v.figs("grad-cam") if b["type"] == "figure"]
    return out


def _diff_ci(d: dict[str, Any]) -> str:
    diff = num(d.get("diff"))
    if diff is None:
        return NA
    lo, hi = num(d.get("lo")), num(d.get("hi"))
    ci = f" [{fmt_auc(lo)}, {fmt_auc(hi)}]" if lo is not None and hi is not None else ""
    return f"{diff:+.3f}{ci}"


def _sec_constrained_improvement(v: View) -> list[Block]:
    """10 Constrained improvement."""
    out: list[Block] = []
    out.append(paragraph(
        f"The one change: {v.ckey} goes from {v.cbase} (baseline) to {v.cvar} (variant); no "
        "other setting, seed or data split differs, so any difference is attributable to it "
        "(up to training noise)."))
    out.append(paragraph(_cap(v.accuracy_change()) + "."))
    tracked = [f for f in v.top if _d(f.get("variant"))]
    if v.trk or tracked:
        out.append(paragraph(describe_tracking(v.trk or {"tracked": len(tracked)})))
        out.append(table_block(
            ["Rank", "Index", "True", "Baseline prediction", "Baseline confidence",
             "Variant prediction", "Variant confidence", "Variant P(true)", "Outcome",
             "Label-error suspect"],
            [[_s(f.get("rank")), _s(f.get("index")), _s(f.get("true_name")),
              _s(f.get("pred_name")), fmt_pct(f.get("confidence")),
              _s(_d(f.get("variant")).get("pred_name")),
              fmt_pct(_d(f.get("variant")).get("confidence")),
              fmt_pct(_d(f.get("variant")).get("true_prob")),
              STATUS_SHORT.get(str(_d(f.get("variant")).get("status")),
                               _s(_d(f.get("variant")).get("status"))),
              "yes" if f.get("label_error_suspect") else "no"] for f in tracked],
            align="rrllrlrrnl",
            highlight={i for i, f in enumerate(tracked)
                       if _d(f.get("variant")).get("status") == "fixed"},
            caption="Each tracked baseline failure, re-evaluated by the variant (fixed rows "
                    "highlighted; still wrong: the same wrong class)"))
    else:
        out.append(note_block("Failure tracking was not computed."))
    out += notes_blocks(v)
    out += v.figs("constrained-improvement", "gradcam_tracking")
    return out


def _sec_comparison(v: View) -> list[Block]:
    """11 Comparison & statistics."""
    out: list[Block] = []
    out.append(paragraph(" ".join(filter(None, [_cap(v.accuracy_change(from_to=False)) + ".",
                                         v.noise_text()]))))
    if v.seed_level:
        out.append(heading(f"One pair: seed {_s(v.pair_seed)} (supporting detail)"))
        out.append(paragraph(
            f"For the seed-{_s(v.pair_seed)} pair alone the difference is "
            f"{fmt_points(v.acc.get('diff', v.diff), signed=True)} points (95% CI "
            f"[{fmt_points(v.acc.get('lo'))}, {fmt_points(v.acc.get('hi'))}], "
            f"McNemar's exact test {p_clause(v.mc.get('p_value'))}); it covers {NOISE_PAIR}."))
    if v.acc:
        lvl = num(v.acc.get("level")) or 0.95
        out.append(table_block(
            ["Difference (variant − baseline)", f"{lvl * 100:g}% CI low",
             f"{lvl * 100:g}% CI high", "Standard error", "Method"],
            [[fmt_points(v.acc.get("diff"), signed=True) + " points", fmt_points(v.acc.get("lo")),
              fmt_points(v.acc.get("hi")), fmt_points(v.acc.get("se")),
              METHOD_TEXT.get(str(v.acc.get("method")), _s(v.acc.get("method")))]],
            align="rrrrl", caption="Paired accuracy difference on the test images"
            + (f" (seed-{_s(v.pair_seed)} pair; covers {NOISE_PAIR})"
               if v.pair_seed is not None else f" (covers {NOISE_PAIR})")))
    else:
        out.append(note_block("The accuracy-difference confidence interval was not computed."))
    if v.mc:
        out.append(heading("McNemar's exact test"))
        out.append(table_block(
            ["", "Variant right", "Variant wrong"],
            [["Baseline right", fmt_int(v.mc.get("both_right")), fmt_int(v.mc.get("a_only"))],
             ["Baseline wrong", fmt_int(v.mc.get("b_only")), fmt_int(v.mc.get("both_wrong"))]],
            caption=f"Paired outcomes on {fmt_int(v.mc.get('n'))} test images; "
                    f"{p_clause(v.mc.get('p_value'))} (two-sided exact binomial on the "
                    f"discordant images, statistic {fmt_int(v.mc.get('statistic'))})"))
        sig = ("significant" if (num(v.mc.get("p_value")) is not None
                                 and num(v.mc.get("p_value")) < ALPHA)  # type: ignore[operator]
               else "not significant")
        out.append(paragraph(
            f"The variant fixed {fmt_int(v.mc.get('b_only'))} images the baseline got wrong and "
            f"broke {fmt_int(v.mc.get('a_only'))} it got right; only these discordant images "
            f"carry evidence. McNemar's exact test: {p_clause(v.mc.get('p_value'))}"
            # with several seeds the verdict is the seed-level test's alone: no second one here
            + ("." if v.seed_level else
               f", {sig} at the {_alpha_text(ALPHA)} level for these two trained models "
               f"({NOISE_PAIR}).")))
    else:
        out.append(note_block("McNemar's test was not computed."))
    pc = _d(v.comp.get("per_class"))
    for kind, title in (("improved", "Most improved classes"),
                        ("worsened", "Most worsened classes")):
        items = [_d(x) for x in _l(pc.get(kind))][:10]
        if items:
            out.append(table_block(
                ["Class", "Test images", "Baseline", "Variant", "Change (points)",
                 "95% CI (Newcombe)"],
                # stats.per_class_changes calls them acc_a / acc_b: accept either name
                [[_s(x.get("name")), fmt_int(x.get("n")), fmt_pct(first_set(x, "before", "acc_a")),
                  fmt_pct(first_set(x, "after", "acc_b")),
                  fmt_points(x.get("delta"), signed=True), _class_ci_text(x)] for x in items],
                caption=title + f" (test accuracy per class, seed-{_s(v.pair_seed)} pair; "
                f"{PER_CLASS_CI_NOTE})"))
    if pc.get("improved") or pc.get("worsened"):
        bits = []
        imp, wor = _l(pc.get("improved")), _l(pc.get("worsened"))
        if imp:
            bits.append(f"the most improved class is {describe_class_change(_d(imp[0]))}")
        if wor:
            bits.append(f"the most worsened is {describe_class_change(_d(wor[0]))}")
        out.append(paragraph(_cap("; ".join(bits)) + f". {PER_CLASS_CI_NOTE[:1].upper()}"
                      f"{PER_CLASS_CI_NOTE[1:]}, so no class-level change is called significant "
                      "here."))
    else:
        out.append(note_block("Per-class changes were not computed."))
    out += v.figs("comparison", "confusion_difference", "per_class_changes")
    out.append(heading("Across seeds"))
    out.append(paragraph(describe_seeds(v.seeds_block, ALPHA, _l(v.sm.get("seeds")))))
    ps_a = {_s(_d(x).get("seed")): _d(x).get("test_top1") for x in _l(v.base.get("per_seed"))}
    ps_b = {_s(_d(x).get("seed")): _d(x).get("test_top1") for x in _l(v.var.get("per_seed"))}
    per_seed_mc = [_d(x) for x in _l(_d(v.seeds_block).get("mcnemar_per_seed"))]
    if per_seed_mc:
        out.append(table_block(
            ["Seed", "Difference (points)", "95% CI (paired Wald)", "Baseline only right",
             "Variant only right", "McNemar p"],
            [[_s(x.get("seed")), fmt_points(x.get("diff"), signed=True),
              f"[{fmt_points(x.get('lo'))}, {fmt_points(x.get('hi'))}]"
              if num(x.get("lo")) is not None else NA,
              fmt_int(x.get("a_only")), fmt_int(x.get("b_only")),
              fmt_p(x.get("p_value"))] for x in per_seed_mc],
            caption=f"Each seed's pair on the test images (supporting detail; covers "
                    f"{NOISE_PAIR} each)"))
    if len(ps_a) > 1 or len(ps_b) > 1:
        out.append(table_block(["Seed", "Baseline test top-1", "Variant test top-1"],
                          [[s, fmt_pct(ps_a.get(s)), fmt_pct(ps_b.get(s))]
                           for s in dict.fromkeys(list(ps_a) + list(ps_b))],
                          caption="Per-seed test accuracy"))
    return out


PER_CLASS_CI_NOTE = ("intervals: Newcombe's hybrid Wilson score method for a difference of two "
                     "proportions over that class's test images, treating the arms as "
                     "independent (wider than a paired interval when the two models agree on "
                     "many images); they cover test-image sampling only and are not adjusted "
                     "for picking the largest changes out of all classes")


def class_change_ci(x: dict[str, Any]) -> tuple[float, float] | None:
    """The Newcombe interval of one per-class change (needs its image count n)."""
    n = num(x.get("n"))
    a, b = num(first_set(x, "before", "acc_a")), num(first_set(x, "after", "acc_b"))
    if n is None or n < 1 or a is None or b is None:
        return None
    return newcombe_diff_ci(round(a * n), n, round(b * n), n)


def _class_ci_text(x: dict[str, Any]) -> str:
    ci = class_change_ci(x)
    return NA if ci is None else f"[{fmt_points(ci[0])}, {fmt_points(ci[1])}]"


def describe_class_change(x: dict[str, Any]) -> str:
    """'whale (+54.55 points on 11 test images, 95% CI [14.10, 74.68])', or with no image count
    'whale (+54.55 points; the number of test images was not recorded, so no interval)'."""
    name, delta = _s(x.get("name")), fmt_points(x.get("delta"), signed=True)
    ci = class_change_ci(x)
    if ci is None:
        return (f"{name} ({delta} points; the number of test images was not recorded, so no "
                "interval)")
    n = int(num(x.get("n")) or 0)
    return (f"{name} ({delta} points on {n} test image{'' if n == 1 else 's'}, 95% CI "
            f"[{fmt_points(ci[0])}, {fmt_points(ci[1])}])")


def _sec_complexity(v: View) -> list[Block]:
    """12 Complexity."""
    out: list[Block] = []
    out.append(table_block(
        ["Model", "Parameters", "Parameters (M)", "FLOPs"],
        [["Baseline CNN", fmt_int(v.base.get("params")), fmt_params_m(v.base.get("params")),
          fmt_flops(v.base.get("flops"))],
         ["Variant CNN", fmt_int(v.var.get("params")), fmt_params_m(v.var.get("params")),
          fmt_flops(v.var.get("flops"))]],
        caption="Model complexity (forward pass, one 32×32 image)"))
    out.append(paragraph(describe_cost(v.base, v.var, v.ckey,
                                 v.verdict() if v.seed_level else "")))
    return out


def _sec_reflection(v: View) -> list[Block]:
    """13 Reflection."""
    return [bullet_list(_reflection(v))]


def _sec_reproducibility(v: View) -> list[Block]:
    """14 Reproducibility."""
    out: list[Block] = []
    seeds_txt = ", ".join(_s(s) for s in _l(v.sm.get("seeds"))) or _s(v.cfg.get("seed"))
    rrows = [["Seed(s)", seeds_txt], ["Created", _s(v.sm.get("created"))]]
    rrows += [[_s(k), _s(val)] for k, val in v.env.items()]
    timing = _d(v.sm.get("timing"))
    if "total_s" in timing:
        rrows.append(["Total time", fmt_dur(timing.get("total_s"))])
    out.append(table_block(["Item", "Value"], rrows, align="ll", caption="Environment"))
    out.append({"type": "code", "label": "Command that produced this study:",
                "text": _s(v.sm.get("command"), "not recorded")})
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
    "constrained-improvement": _sec_constrained_improvement,
    "comparison": _sec_comparison,
    "complexity": _sec_complexity,
    "reflection": _sec_reflection,
    "reproducibility": _sec_reproducibility,
}


def build_context(summary: dict[str, Any], study_dir: Path) -> dict[str, Any]:
    """All report content as plain, already-formatted strings, shared by both templates."""
    from cifarlens import __version__

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
    from cifarlens.figures.style import ARM_COLORS
    from cifarlens.study.browse import table_context

    return {
        "browse": table_context(v.study_dir, v.sm.get("browse", {}).get("file")
                                if isinstance(v.sm.get("browse"), dict) else None),
        "browse_js": Markup(BROWSE_JS),
        "script_hash": BROWSE_JS_SHA256,
        "title": _s(v.sm.get("title"), "cifarlens study"),
        "created": _s(v.sm.get("created")),
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
    bt, vt, fails, explain = v.bt, v.vt, v.fails, v.explain
    if v.seed_level:
        lead = VERDICT_LEAD[v.verdict()]
        out = [f"{lead}: with {v.change_text}, {v.accuracy_change()}."]
    else:
        out = [f"Nothing is concluded about the change yet: with {v.change_text}, "
               f"{v.accuracy_change()}."]
    out.append(describe_calibration_change(bt.get("ece"), vt.get("ece"),
                                           v.comp.get("ece_change")))
    if v.trk:
        out.append(describe_tracking(v.trk))
    tw, cw, le = (num(fails.get(k)) for k in ("total_wrong", "confident_wrong",
                                               "label_error_suspects"))
    if tw and cw is not None:
        out.append(f"{fmt_pct(cw / tw)} of the baseline's errors ({fmt_int(cw)} of "
                   f"{fmt_int(tw)}) come with confidence ≥ "
                   f"{fmt_pct(fails.get('confident_threshold'))} on "
                   f"{confidence_basis(fails)}; these are the dangerous "
                   "failures in deployment, because nothing in the output flags them.")
    if le is not None and tw:
        out.append(f"{fmt_int(le)} of the baseline's {fmt_int(tw)} errors ({fmt_pct(le / tw)}) "
                   "are flagged as suspected label errors, so part of the measured error rate "
                   "may be the dataset's, not the model's." if le else
                   f"None of the baseline's {fmt_int(tw)} errors was flagged as a likely label "
                   "error.")
    bs = _d(explain.get("border_share"))
    if bs:
        out.append(describe_border(bs))
    else:
        out.append("Background reliance was not measured (no Grad-CAM border analysis).")
    sc = _d(bt.get("superclass"))
    if sc:
        out.append(describe_superclass("baseline", sc))
    if v.n_seeds == 2:
        out.append("With 2 seeds the t-test has 1 degree of freedom: its interval is wide and "
                   "it rarely detects anything; 3 or more seeds give a usable test.")
    if v.generated:
        out.append(f"These results come from GENERATED data, not {v.dataset}: they show that the "
                   "pipeline works, not how the models behave on real images.")
    return out
