"""The report's context: the summary read once (_View), the first screen and every section, in the explicit SECTION_BUILDERS table."""


from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..errors import CifarlensError
from ..runs import Run
from ..study_folder import StudyFolder
from .constants import (
    ALPHA,
    BROWSE_JS,
    BROWSE_JS_SHA256,
    COLLAPSED,
    FIGURES,
    FIRST_SCREEN_FIGURES,
    METHOD_TEXT,
    NA,
    SECTIONS,
    STATUS_SHORT,
    STATUS_TEXT,
    UNSET,
)
from .embed import Figure, load_figure
from .formats import (
    _alpha_text,
    _cap,
    _d,
    _diff,
    _l,
    _s,
    clean_text,
    dataset_title,
    fmt_auc,
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
from .sentences import (
    NOISE_PAIR,
    NOISE_SEEDS,
    SEED_REPORT,
    _seed_ci,
    _seed_n,
    change_verdict,
    describe_border,
    describe_calibration_change,
    describe_faithfulness,
    describe_mce,
    describe_pair,
    describe_replication,
    describe_seed_level,
    describe_seeds,
    describe_superclass,
    describe_temperature,
    describe_tracking,
    recipe_rows,
    replication_applies,
    replication_verdict,
)

# --------------------------------------------------------------------------- context


def _table(headers: list[str], rows: list[list[Any]], *, align: str | None = None,
           highlight: set[int] | None = None, caption: str = "") -> dict[str, Any]:
    """A table block; align is one char per column ('l', 'r', or 'n': left and never wrapped,
    for short labels), default: first l, rest r."""
    ncol = len(headers)
    align = align or ("l" + "r" * (ncol - 1))
    return {"type": "table", "headers": headers,
            "rows": [[_s(c) for c in r] for r in rows], "align": list(align),
            "highlight": sorted(highlight or ()), "caption": caption}


def _p(text: str, lead: str = "") -> dict[str, Any]:
    return {"type": "p", "text": text, "lead": lead}


def _note(text: str) -> dict[str, Any]:
    return {"type": "note", "text": text}


def _h3(text: str) -> dict[str, Any]:
    return {"type": "h3", "text": text}


def _list(items: list[str]) -> dict[str, Any]:
    return {"type": "list", "items": items}


def _gh_slug(text: str) -> str:
    """The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces -> -."""
    s = re.sub(r"[^\w\- ]", "", text.lower())
    return s.replace(" ", "-")


Block = dict[str, Any]


class _View:
    """The parts of a summary every section reads, pulled out defensively once (missing or
    mistyped parts become {} / [] / None), plus the study's figures, numbered in order."""

    def __init__(self, summary: dict[str, Any], study_dir: Path) -> None:
        self.study_dir = Path(study_dir)
        self.sm = sm = summary
        self.models = models = _d(sm.get("models"))
        self.base, self.var = _d(models.get("baseline")), _d(models.get("variant"))
        self.bt, self.vt = _d(self.base.get("test")), _d(self.var.get("test"))
        self.change = _d(sm.get("change"))
        self.comp = comp = _d(sm.get("comparison"))
        self.acc = _d(comp.get("accuracy_difference"))
        self.mc = _d(comp.get("mcnemar"))
        seeds = comp.get("seeds")
        self.seeds_block: dict[str, Any] | None = seeds if isinstance(seeds, dict) else None
        # The verdict about the change needs seed-to-seed variation: 2+ paired seeds.
        self.n_seeds = _seed_n(self.seeds_block)
        self.seed_level = self.n_seeds >= 2
        self.pair_seed = comp.get("pair_seed", (_l(sm.get("seeds")) or [None])[0])
        self.fails = _d(sm.get("failures"))
        self.trk = _d(self.fails.get("tracking"))
        self.top = [_d(x) for x in _l(self.fails.get("top"))]
        self.explain = _d(sm.get("explain"))
        self.env = _d(sm.get("environment"))
        self.split = _d(sm.get("split"))
        self.cfg = _d(sm.get("config"))
        self.dataset = dataset_title(sm)
        self.user_data = sm.get("data_source") == "user"
        self.generated = sm.get("data_source") == "generated"
        self.ckey = _s(self.change.get("key"))
        # None is a real setting value here (e.g. train_limit=None: use all images)
        self.cbase, self.cvar = (_s(self.change.get(k), UNSET) for k in ("baseline", "variant"))
        self.change_text = f"{self.ckey}: {self.cbase} → {self.cvar}"
        self.diff = self.acc.get("diff", _diff(self.bt.get("top1"), self.vt.get("top1")))
        self.figs_in = _d(sm.get("figures"))
        self.notes = read_notes(self.study_dir)
        # Figures: placed in their section, numbered in order of appearance.
        self.placed: dict[str, list[Figure]] = {sid: [] for sid, _ in SECTIONS}
        self.placed["appendix"] = []
        for key in list(FIGURES) + [k for k in self.figs_in if k not in FIGURES]:
            if key in self.figs_in and self.figs_in[key] is not None:
                sid, cap = FIGURES.get(key, ("appendix", f"Figure '{clean_text(key)}'"))
                self.placed[sid].append(load_figure(self.study_dir, str(key),
                                                    self.figs_in[key], cap))
        # Per-change figures of a study with several changes: the first change's are placed
        # above like a one-change study's; each other change's tracking and curves here.
        if _d(sm.get("ablation")):
            for var in [_d(x) for x in _l(sm.get("variants"))][1:]:
                vf, slug = _d(var.get("figures")), _s(var.get("slug"))
                what = _ablation_change({"key": _d(var.get("change")).get("key"),
                                         "baseline_value": _d(var.get("change")).get("baseline"),
                                         "variant_value": _d(var.get("change")).get("variant")})
                for key, cap in (("gradcam_tracking", FIGURES["gradcam_tracking"][1]),
                                 ("curves", FIGURES["curves"][1] + ", baseline and variant")):
                    if vf.get(key) is not None:
                        self.placed["ablation"].append(load_figure(
                            self.study_dir, f"{key}_{slug}", vf[key], f"{what}: {cap}"))
        # The first screen's figures are numbered first; then in order of appearance.
        by_key = {f.key: f for fs in self.placed.values() for f in fs}
        self.first_figs = [by_key[k] for k in FIRST_SCREEN_FIGURES
                           if k in by_key and by_key[k].status == "ok"]
        order = self.first_figs + [f for sid in [s for s, _ in SECTIONS] + ["appendix"]
                                   for f in self.placed[sid] if f not in self.first_figs]
        seen: dict[str, Figure] = {}
        counter = 0
        for f in order:
            f.first = f in self.first_figs
            if f.status == "ok" and f.sha in seen:  # the same image listed twice: embed once
                f.status, f.data_uri = "dup", ""
                f.number = seen[f.sha].number
                f.note = f"The same image as Figure {f.number}."
                continue
            if f.status == "ok":
                seen[f.sha] = f
            counter += 1
            f.number = counter

    def verdict(self) -> str:
        """The one verdict the report states: from the seed-level t-test when the study ran
        2+ seeds, else from the one pair's McNemar test and paired CI."""
        if self.seed_level:
            sb = _d(self.seeds_block)
            lo, hi = _seed_ci(sb)
            return change_verdict(sb.get("mean_diff"), lo, hi, sb.get("p_value"))
        return change_verdict(self.diff, self.acc.get("lo"), self.acc.get("hi"),
                              self.mc.get("p_value"))

    def accuracy_change(self, from_to: bool = True) -> str:
        """The headline clause: the seed-level result, or one pair's result said as such."""
        if self.seed_level:
            return describe_seed_level(_d(self.seeds_block))
        return describe_pair(self.acc, self.mc, self.pair_seed,
                             self.bt.get("top1") if from_to else None,
                             self.vt.get("top1") if from_to else None)

    def noise_text(self) -> str:
        if self.seed_level:
            return (f"The seed-level interval and test cover {NOISE_SEEDS}. The per-seed "
                    f"McNemar tests and paired intervals below cover {NOISE_PAIR} each: "
                    "supporting detail, not the verdict.")
        return ""  # describe_pair already says what its interval covers

    def figs(self, sid: str, *keys: str) -> list[Block]:
        """Figure blocks for a section (only `keys` if given), and a 'not produced' note for
        each expected key the summary does not list."""
        out: list[Block] = []
        for f in self.placed[sid]:
            if keys and f.key not in keys:
                continue
            if f.first:  # embedded once, on the first screen
                out.append({"type": "figref", "fig": f,
                            "text": f"Figure {f.number} ({f.caption[0].lower()}"
                                    f"{f.caption[1:]}) is shown at the top of the report."})
            else:
                out.append({"type": "figure", "fig": f})
        for k in keys:
            if self.figs_in.get(k) is None:
                cap = FIGURES[k][1]
                out.append(_note(f"The {cap[0].lower() + cap[1:]} figure was not produced."))
        return out


def _sec_replication(v: _View) -> list[Block]:
    """0 The seed report side by side: its numbers, this study's, and whether they agree."""
    sr, sb = SEED_REPORT, _d(v.seeds_block)
    why_not = replication_applies(v.sm)
    if v.seed_level:
        lo, hi = _seed_ci(sb)
        a, b = fmt_pct(sb.get("mean_a")), fmt_pct(sb.get("mean_b"))
        sd = [sb.get("std_a"), sb.get("std_b")]
        a += f" ± {fmt_points(sd[0])}" if num(sd[0]) is not None else ""
        b += f" ± {fmt_points(sd[1])}" if num(sd[1]) is not None else ""
        ch = (f"{fmt_points(sb.get('mean_diff'), signed=True)} [{fmt_points(lo)}, "
              f"{fmt_points(hi)}]" if num(lo) is not None else
              fmt_points(sb.get("mean_diff"), signed=True))
        col = f"This study (mean ± std over {v.n_seeds} seeds)"
        how = (f"95% CI across {v.n_seeds} seeds (paired t): covers {NOISE_SEEDS}")
        verdict = replication_verdict(lo, hi)
    else:
        a, b = fmt_pct(v.bt.get("top1")), fmt_pct(v.vt.get("top1"))
        ch = (f"{fmt_points(v.diff, signed=True)} [{fmt_points(v.acc.get('lo'))}, "
              f"{fmt_points(v.acc.get('hi'))}]")
        col = "This study (one trained pair)"
        how = f"95% CI (paired Wald): covers {NOISE_PAIR}"
        lo = hi = None
        verdict = "not_judged"
    if v.generated:
        col += ", generated data"
    rows = [
        ["Baseline test accuracy", fmt_pct(sr["baseline_top1"]), a],
        ["Crop + flip test accuracy" if not why_not else "Variant test accuracy",
         fmt_pct(sr["variant_top1"]), b],
        ["Change (points)", fmt_points(sr["diff"], signed=True), ch],
        ["Interval of the change", "none (one run per model)", how],
        ["Parameters", fmt_int(sr["params"]), fmt_int(v.base.get("params"))],
        ["FLOPs per image", sr["flops_text"], fmt_flops(v.base.get("flops"))],
    ]
    out: list[Block] = [_table(["Quantity", "Seed report", col], rows, align="lll",
                               caption="The seed report's numbers next to this study's")]
    out.append(_p(describe_replication(verdict, lo, hi, v.n_seeds, why_not),
                  lead="Replication."))
    if not why_not:
        out.append(_note(
            "Reproduced: the seed's +6.63 points lie inside the seed-level 95% CI, which excludes "
            "0; exceeded: the whole CI lies above +6.63; smaller: the CI lies above 0 but below "
            "+6.63; not reproduced: the CI lies below +6.63 and reaches 0; not decided: the CI "
            "holds both 0 and +6.63. The seed report gives no interval, so its own run-to-run "
            "noise is not counted. The training recipe differs where the seed is silent "
            "(section Training setup)."))
    return out


def _ablation_change(r: dict[str, Any]) -> str:
    return (f"{_s(r.get('key'))}: {_s(r.get('baseline_value'), UNSET)} → "
            f"{_s(r.get('variant_value'), UNSET)}")


def describe_ablation_row(r: dict[str, Any], ab: dict[str, Any]) -> str:
    """One change's sentence in the ablation: helped / hurt / did not differ, from its
    Holm-adjusted seed-level p-value and the sign of its interval, naming the correction and the
    noise covered; with one seed, the numbers and nothing more."""
    r, ab = _d(r), _d(ab)
    alpha = num(ab.get("alpha")) or ALPHA
    m, n = fmt_int(ab.get("m")), fmt_int(r.get("n_seeds"))
    diff = f"{fmt_points(r.get('diff'), signed=True)} points"
    lo, hi = r.get("lo"), r.get("hi")
    ci = (f" (95% CI [{fmt_points(lo)}, {fmt_points(hi)}])"
          if num(lo) is not None and num(hi) is not None else "")
    fromto = f"from {fmt_pct(r.get('before'))} to {fmt_pct(r.get('after'))}"
    tests = (f"the paired t-test across {n} seeds {p_clause(r.get('p'))}, Holm-adjusted over "
             f"{m} changes {p_clause(r.get('p_holm'))}")
    covers = f"it covers {_s(ab.get('covers'), 'training seeds and test-image sampling')}"
    verdict = r.get("verdict")
    head = _ablation_change(r)
    if verdict in ("helped", "hurt"):
        word = "rose" if verdict == "helped" else "fell"
        return (f"{head} {verdict}: the mean test accuracy {word} {fromto}, {diff}{ci}; "
                f"{tests}, below {alpha:g} ({covers}).")
    if verdict == "no detectable difference":
        return (f"{head} did not differ detectably from the baseline: mean test accuracy "
                f"{fromto}, {diff}{ci}; {tests}, not below {alpha:g} ({covers}).")
    return (f"{head}: test accuracy {fromto}, {diff}, for one trained pair; with one seed there "
            "is no seed-level test, so nothing is concluded about this change.")


def ablation_lines(summary: dict[str, Any]) -> list[str]:
    """The ablation's one sentence per change (empty for a one-change study): what `cifarlens
    study` prints after the headline."""
    ab = _d(_d(summary).get("ablation"))
    return [clean_text(describe_ablation_row(_d(r), ab)) for r in _l(ab.get("rows"))]


def _sec_ablation(v: _View) -> list[Block] | None:
    """Every change against the shared baseline (only in a study with 2+ changes)."""
    ab = _d(v.sm.get("ablation"))
    rows = [_d(r) for r in _l(ab.get("rows"))]
    if not rows:
        return None
    m = fmt_int(ab.get("m"))
    table = []
    for r in rows:
        mc = ", ".join(f"s{_s(_d(x).get('seed'))}: {fmt_p(_d(x).get('p_value'))}"
                       for x in _l(r.get("per_seed_mcnemar")))
        ci = (f" [{fmt_points(r.get('lo'))}, {fmt_points(r.get('hi'))}]"
              if num(r.get("lo")) is not None else "")
        table.append([_ablation_change(r), fmt_pct(r.get("before")), fmt_pct(r.get("after")),
                      fmt_points(r.get("diff"), signed=True) + ci, fmt_p(r.get("p")),
                      fmt_p(r.get("p_holm")), _s(r.get("verdict")), mc or NA])
    out: list[Block] = [
        _p(f"{fmt_int(len(rows))} variants, each differing from one shared baseline in exactly "
           "one training setting; the baseline runs were trained once and every variant is "
           "paired with them by seed.", lead="Ablation."),
        _table(["Change", "Baseline", "Variant", "Difference, points [95% CI]", "p (paired t)",
                f"p (Holm, {m} changes)", "Verdict", "Per-seed McNemar p"], table,
               align="lrrrrrll", highlight={i for i, r in enumerate(rows)
                                            if r.get("verdict") in ("helped", "hurt")},
               caption="Every change against the baseline: mean test accuracy over seeds"),
        _list([describe_ablation_row(r, ab) for r in rows]),
        _note(f"Method: {_s(ab.get('method'))}. Holm's correction keeps the chance that any of "
              f"the {m} verdicts is a false 'helped' or 'hurt' at {_alpha_text(num(ab.get('alpha')) or ALPHA)}; "
              "the intervals are not adjusted. The per-seed McNemar tests cover "
              f"{NOISE_PAIR} each: supporting detail, not the verdict. The first change's "
              "figures and tracked failures are in the sections below; the others' follow."),
    ]
    for var in [_d(x) for x in _l(v.sm.get("variants"))][1:]:  # the first's: sections below
        c, slug = _d(var.get("change")), _s(var.get("slug"))
        out.append(_h3(_ablation_change({"key": c.get("key"), "baseline_value": c.get("baseline"),
                                         "variant_value": c.get("variant")})))
        trk = _d(_d(var.get("failures")).get("tracking"))
        if trk:
            out.append(_p(describe_tracking(trk)))
        out += [{"type": "figure", "fig": f} for f in v.placed["ablation"]
                if f.key in (f"gradcam_tracking_{slug}", f"curves_{slug}")]
    return out


# "Still improving": the best epoch lies within the last 10% of epochs (at least the last
# one) AND the least-squares slope over the last 5 epochs points the improving way.
IMPROVING_TAIL = 0.10
IMPROVING_SLOPE_EPOCHS = 5
MAX_HISTORY_BYTES = 5 * 1024 * 1024


def still_improving(values: list[float], higher_is_better: bool = True) -> dict[str, Any] | None:
    """{'best_epoch', 'epochs', 'slope'} (1-based epochs, slope per epoch over the last
    IMPROVING_SLOPE_EPOCHS) when the curve was still improving at its last epoch, else None.
    A curve of fewer than 2 epochs is never called improving (no slope)."""
    vals = [float(x) for x in values if num(x) is not None]
    n = len(vals)
    if n < 2 or n != len(values):
        return None
    sign = 1.0 if higher_is_better else -1.0
    best = max(range(n), key=lambda i: (sign * vals[i], i))  # the latest of equal bests
    tail = max(1, math.ceil(n * IMPROVING_TAIL))
    k = min(n, IMPROVING_SLOPE_EPOCHS)
    xs, ys = list(range(n - k, n)), vals[n - k:]
    mx, my = sum(xs) / k, sum(ys) / k
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    if best >= n - tail and sign * slope > 0:
        return {"best_epoch": best + 1, "epochs": n, "slope": slope}
    return None


def _histories(study_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """run name -> its per-epoch records, from STUDY/runs/*/metrics.jsonl (bad lines skipped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    root = study_dir / StudyFolder.RUNS
    if not root.is_dir():
        return out
    for path in sorted(root.glob(f"*/{Run.HISTORY}")):
        try:
            if path.stat().st_size > MAX_HISTORY_BYTES:
                continue
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        recs = []
        for ln in lines:
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if isinstance(r, dict) and "epoch" in r:
                recs.append(r)
        if recs:
            out[path.parent.name] = recs
    return out


def describe_still_improving(hists: dict[str, list[dict[str, Any]]]) -> str:
    """A warning naming the runs whose validation accuracy or loss was still improving at
    their last epoch (see still_improving), or '' when none was."""
    hits: dict[str, list[str]] = {}
    for name, recs in hists.items():
        for key, label, higher in (("val_acc", "validation accuracy still rising", True),
                                   ("val_loss", "validation loss still falling", False)):
            vals = [r.get(key) for r in recs]
            if vals and all(num(x) is not None for x in vals) and still_improving(vals, higher):
                hits.setdefault(label, []).append(clean_text(name))
    if not hits:
        return ""
    n = len(hists)
    parts = [f"{label} in {len(names)} of {n} run{'' if n == 1 else 's'} ({', '.join(names)})"
             for label, names in hits.items()]
    return ("Not converged: " + "; ".join(parts) + f" (best epoch within the last "
            f"{IMPROVING_TAIL:.0%} of epochs and a last-{IMPROVING_SLOPE_EPOCHS}-epoch slope "
            "still improving). More epochs could change both accuracies and their difference.")


def curve_warnings(v: _View) -> list[str]:
    w = describe_still_improving(_histories(v.study_dir))
    return [w] if w else []


VERDICT_LEAD = {"rose": "The change helped", "fell": "The change hurt",
                "no_change": "The change made no significant difference",
                "borderline": "The evidence on the change is borderline",
                "unknown": "The change's effect could not be tested"}


def first_screen_ablation(v: _View) -> list[Block]:
    """The first screen's table of several one-change comparisons, when summary.json has an
    "ablation" block ({"rows": [{"change", "diff", "lo", "hi", "p", "p_holm", "verdict"}]});
    [] when it has none. Numbers and the producer's verdict only: the producer owns the test."""
    rows = [_d(r) for r in _l(_d(v.sm.get("ablation")).get("rows"))]
    if not rows:
        return []
    return [_table(
        ["Change", "Difference (points)", "95% CI", "p", "p (Holm)", "Verdict"],
        [[_s(r.get("change")), fmt_points(r.get("diff"), signed=True),
          f"[{fmt_points(r.get('lo'))}, {fmt_points(r.get('hi'))}]", fmt_p(r.get("p")),
          fmt_p(r.get("p_holm")), _s(r.get("verdict"))] for r in rows],
        align="lrrrrl", caption="Each change against the baseline")]


def first_screen(v: _View) -> dict[str, Any]:
    """The answer, before any detail: both accuracies and the difference with its interval as
    big numbers, how many seeds stand behind them, the seed report next to this study, the
    curves, the tracked failures and the cost line."""
    sb = _d(v.seeds_block)
    if v.seed_level:
        a, b = fmt_pct(sb.get("mean_a")), fmt_pct(sb.get("mean_b"))
        sub_a = (f"mean of {v.n_seeds} seeds ± {fmt_points(sb.get('std_a'))}"
                 if num(sb.get("std_a")) is not None else f"mean of {v.n_seeds} seeds")
        sub_b = (f"mean of {v.n_seeds} seeds ± {fmt_points(sb.get('std_b'))}"
                 if num(sb.get("std_b")) is not None else f"mean of {v.n_seeds} seeds")
        diff = sb.get("mean_diff")
        lo, hi = _seed_ci(sb)
        covers = f"paired t across {v.n_seeds} seeds: covers training seeds and test images"
    else:
        a, b = fmt_pct(v.bt.get("top1")), fmt_pct(v.vt.get("top1"))
        sub_a = sub_b = "one trained model"
        diff, lo, hi = v.diff, v.acc.get("lo"), v.acc.get("hi")
        covers = "paired Wald: covers test-image sampling only"
    n = v.n_seeds if v.seed_level else 1
    lvl = num((sb if v.seed_level else v.acc).get("level")) or 0.95
    ci = (f"{lvl * 100:g}% CI [{fmt_points(lo)}, {fmt_points(hi)}]"
          if num(lo) is not None and num(hi) is not None else "no interval")
    if n >= 2:
        badge, warn = f"{n} seeds", False
        badge_note = "training noise measured across seeds"
    else:
        badge, warn = "1 seed", True
        badge_note = "training noise not measured: rerun with --seeds 3"
    verdict = (VERDICT_LEAD[v.verdict()] if v.seed_level
               else "Nothing is concluded about the change yet (one trained pair)")
    why_not = replication_applies(v.sm)
    sr = SEED_REPORT
    rep_rows = [
        ["Baseline", fmt_pct(sr["baseline_top1"]), a],
        ["Variant", fmt_pct(sr["variant_top1"]), b],
        ["Change (points)", fmt_points(sr["diff"], signed=True),
         f"{fmt_points(diff, signed=True)} [{fmt_points(lo)}, {fmt_points(hi)}]"
         if num(lo) is not None else fmt_points(diff, signed=True)],
    ]
    rep_lo, rep_hi = (_seed_ci(sb) if v.seed_level else (None, None))
    rep_verdict = replication_verdict(rep_lo, rep_hi) if v.seed_level else "not_judged"
    return {
        "baseline": a, "variant": b, "sub_a": sub_a, "sub_b": sub_b,
        "diff": fmt_points(diff, signed=True) + " points" if num(diff) is not None else NA,
        "ci": ci, "covers": covers, "badge": badge, "badge_warn": warn,
        "badge_note": badge_note, "verdict": verdict, "change": v.change_text,
        "headline": _cap(v.accuracy_change()) + ".",
        "replication": _table(["", "Seed report", "This study"], rep_rows, align="lrr",
                              caption="Test accuracy: the seed report and this study"),
        "replication_text": describe_replication(rep_verdict, rep_lo, rep_hi, v.n_seeds,
                                                 why_not),
        "figures": v.first_figs,
        "cost": (f"Baseline: {fmt_int(v.base.get('params'))} parameters, "
                 f"{fmt_flops(v.base.get('flops'))} per image; variant: "
                 f"{fmt_int(v.var.get('params'))} parameters, {fmt_flops(v.var.get('flops'))}. "
                 + _describe_cost(v.base, v.var, v.ckey, v.verdict() if v.seed_level else "")),
        "ablation": first_screen_ablation(v),
        "warnings": curve_warnings(v),
    }


def headline(summary: dict[str, Any], study_dir: Path) -> str:
    """The study's verdict in one sentence, the same words as the report's headline: what
    `cifarlens study` and `demo` print when they finish."""
    v = _View(summary, study_dir)
    text = f"{v.change_text}: {v.accuracy_change()}."
    if v.generated:
        text += f" (generated data, not {v.dataset})"
    return clean_text(text)


def _sec_summary(v: _View) -> list[Block]:
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
    out.append(_p(" ".join(summary_bits), lead="Headline."))
    if v.notes.get("study"):
        out.append({"type": "notes", "items": [{"title": f"Notes on the study ({NOTES_FILE})",
                                                "paras": v.notes["study"], "id": "note-study",
                                                "rank": None}]})
    sb = _d(v.seeds_block)
    mean_rows = ([[f"Test top-1, mean over {v.n_seeds} seeds", fmt_pct(sb.get("mean_a")),
                   fmt_pct(sb.get("mean_b"))]] if v.seed_level else [])
    one = f" (seed {_s(v.pair_seed)})" if v.pair_seed is not None else ""
    out.append(_table(
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


def _sec_dataset(v: _View) -> list[Block]:
    """2 Dataset."""
    out: list[Block] = []
    norm = _d(v.sm.get("normalization"))
    src = _s(v.sm.get("data_source"), "not recorded")
    out.append(_p(
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
    out.append(_table(["Split", "Images"], rows, caption="Split sizes"))
    if used is not None and train is not None and used < train:
        out.append(_note(f"Training used a class-balanced subset of {fmt_int(used)} of "
                         f"the {fmt_int(train)} training images."))
    mean, std = _l(norm.get("mean")), _l(norm.get("std"))
    if mean and std:
        chans = ["R", "G", "B"] if len(mean) == 3 else [str(i) for i in range(len(mean))]
        out.append(_table(
            ["Channel", "Mean", "Std"],
            [[c, fmt_float(m, 4), fmt_float(s, 4)]
             for c, m, s in zip(chans, mean, std, strict=False)],
            caption="Normalization (computed on the training split)"))
    else:
        out.append(_note("Normalization statistics were not recorded."))
    return out


def _sec_architecture(v: _View) -> list[Block]:
    """3 Architecture."""
    out: list[Block] = []
    out.append(_p(
        f"Both models use the '{_s(v.cfg.get('model'))}' architecture"
        + (" unless the change itself is the model" if v.ckey == "model" else "")
        + f": {fmt_int(v.base.get('params'))} parameters and "
        f"{fmt_flops(v.base.get('flops'))} per 32×32 image (torch's FLOP counter, a "
        "multiply-add counts as two)."))
    out.append(_table(
        ["Model", "Architecture", "Parameters", "FLOPs"],
        [["Baseline", _s(v.cfg.get("model")), fmt_int(v.base.get("params")),
          fmt_flops(v.base.get("flops"))],
         ["Variant", v.cvar if v.ckey == "model" else _s(v.cfg.get("model")),
          fmt_int(v.var.get("params")), fmt_flops(v.var.get("flops"))]],
        align="llrr"))
    return out


def _sec_training_setup(v: _View) -> list[Block]:
    """4 Training setup."""
    out: list[Block] = []
    seeds = _l(v.sm.get("seeds"))
    out.append(_p(
        f"The variant differs from the baseline in exactly one setting: {v.change_text} "
        "(highlighted). Everything else, including the seed, is identical"
        + (f"; each arm ran with {len(seeds)} seeds ({', '.join(_s(x) for x in seeds)}), and "
           "seed s of the baseline and of the variant share the split and the initialization."
           if len(seeds) > 1 else ".")))
    out.append(_h3("The seed report's recipe and what cifarlens adds"))
    out.append(_p(
        "The seed report names the optimizer, schedule, loss, batch size and epochs but not "
        "their values; cifarlens fills the gaps with common choices. These are cifarlens' "
        "choices, not the seed's recipe, and they can move the numbers."))
    out.append(_table(
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
        out.append(_table(["Setting", "Baseline", "Variant"], crow,
                          align="lll", highlight=hl, caption="Configuration"))
    else:
        out.append(_note("The training configuration was not recorded."))
    out.append(_table(
        ["Model", "Run", "Best epoch", "Training time"],
        [["Baseline", _s(v.base.get("run")), _s(v.base.get("best_epoch")),
          _dur(v.base.get("train_time_s"))],
         ["Variant", _s(v.var.get("run")), _s(v.var.get("best_epoch")),
          _dur(v.var.get("train_time_s"))]], align="llrr"))
    return out


def _sec_metrics(v: _View) -> list[Block]:
    """5 Metrics."""
    out: list[Block] = []
    mrows = []
    for mname, m in (("Baseline", v.base), ("Variant", v.var)):
        for split_name in ("val", "test"):
            r = _d(m.get(split_name))
            mrows.append([mname, split_name, fmt_float(r.get("loss")), fmt_pct(r.get("top1")),
                          fmt_pct(r.get("top5")), fmt_pct(r.get("macro_f1")),
                          fmt_pct(r.get("ece"))])
    out.append(_table(["Model", "Split", "NLL", "Top-1", "Top-5", "Macro-F1", "ECE"],
                      mrows, align="llrrrrr",
                      caption="Validation and test metrics (best checkpoint; NLL: cross-entropy "
                              "without label smoothing, unlike the training curves' loss)"))
    out.append(_p(
        f"The baseline reaches {fmt_pct(v.bt.get('top1'))} top-1 and "
        f"{fmt_pct(v.bt.get('top5'))} top-5 test accuracy; the variant "
        f"{fmt_pct(v.vt.get('top1'))} and "
        f"{fmt_pct(v.vt.get('top5'))}."))
    out += v.figs("metrics", "curves")
    return out


def _sec_confusions(v: _View) -> list[Block]:
    """6 Confusions."""
    out: list[Block] = []
    for mname, t in (("baseline", v.bt), ("variant", v.vt)):
        tc = _l(t.get("top_confusions"))[:10]
        if tc:
            out.append(_table(
                ["True class", "Predicted as", "Count", "Share of true class"],
                [[_s(c.get("true_name")), _s(c.get("pred_name")), fmt_int(c.get("count")),
                  fmt_pct(c.get("share_of_true"))] for c in map(_d, tc)],
                align="llrr", caption=f"Most confused pairs ({mname}, test)"))
        else:
            out.append(_note(f"Top confused pairs were not computed for the {mname}."))
    out += v.figs("confusions", "confusion")
    out.append(_h3("Superclasses"))
    scs = [(n, _d(t.get("superclass"))) for n, t in (("baseline", v.bt), ("variant", v.vt))]
    if any(sc for _, sc in scs):
        out.append(_table(
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
                out.append(_p(describe_superclass(n, sc)))
        out += v.figs("confusions", "confusion_superclass")
    else:
        out.append(_note(
            "Superclass analysis was not computed (your data defines no superclasses: its files "
            "have no coarse labels)." if v.user_data else
            "Superclass analysis was not computed (the dataset has no superclass labels, "
            "e.g. CIFAR-10)."))
    return out


def _sec_calibration(v: _View) -> list[Block]:
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
    out.append(_table(
        ["Metric (test)", "Baseline before", "Baseline after", "Variant before", "Variant after"],
        crows, caption="Calibration before and after temperature scaling (fitted on validation)"))
    if any(r[2] == NA or r[4] == NA for r in crows[:5]):
        out.append(_note("n/a: that number is not in this study's summary (older studies did "
                         "not carry it)."))
    out.append(_p(describe_mce([(n, c, w) for n, c in (("baseline", bc), ("variant", vc))
                                for w in ("before", "after")])))
    for n, c in (("baseline", bc), ("variant", vc)):
        out.append(_p(describe_temperature(n, c)))
    out.append(_p(describe_calibration_change(v.bt.get("ece"), v.vt.get("ece"),
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


def _sec_failure_cases(v: _View) -> list[Block]:
    """8 Failure cases."""
    out: list[Block] = []
    tw = num(v.fails.get("total_wrong"))
    if v.fails:
        out.append(_p(describe_confident_errors(v.fails, num(v.mc.get("n"))
                                                or num(v.split.get("test")))))
        le = num(v.fails.get("label_error_suspects"))
        if le is not None:
            # The count is over all errors (failures.py applies the rule to every one).
            shown = [f for f in v.top if f.get("label_error_suspect")]
            cl = num(v.fails.get("cleanlab_issues"))
            out.append(_p(
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
        out.append(_note("Failure analysis was not computed."))
    out += v.figs("failure-cases", "failure_gallery")
    if v.top:
        out.append(_table(
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
        out.append(_p("No class has more than one confident error: each class with one has "
                      "only that one, so no class stands out."
                      if len(pce) > 1 else "Only one class has a confident error."))
    elif pce:
        out.append(_table(
            ["True class", "Confident errors"],
            [[_s(x.get("name")), fmt_int(x.get("count"))] for x in pce],
            caption="Classes with the most confident errors"))
    return out


def _sec_grad_cam(v: _View) -> list[Block]:
    """9 Grad-CAM."""
    out: list[Block] = []
    if v.explain:
        out.append(_p(
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
            out.append(_h3("Faithfulness"))
            out.append(_table(
                ["Pixel order", "Deletion AUC (lower = better)", "Insertion AUC (higher = better)"],
                [[labels.get(k, k), fmt_auc(_d(r).get("deletion_auc")),
                  fmt_auc(_d(r).get("insertion_auc"))] for k, r in faith.items()]))
            comps = _d(ft.get("comparisons"))
            if comps:
                lvl = f"{(num(ft.get('level')) or 0.95) * 100:g}%"
                out.append(_table(
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
            out.append(_p(describe_faithfulness(faith, ft)))
        else:
            out.append(_note("The faithfulness check was not computed."))
        out += v.figs("grad-cam", "deletion_insertion")
        bs = _d(v.explain.get("border_share"))
        out.append(_h3("Grad-CAM mass near the border"))
        if bs:
            out.append(_table(
                ["Group", "Grad-CAM mass in the border band"],
                [["Failures", fmt_pct(bs.get("failures"))],
                 ["Correct predictions", fmt_pct(bs.get("correct"))],
                 ["Uniform map (reference)", fmt_pct(bs.get("uniform"))],
                 ["Centre prior (reference)", fmt_pct(bs.get("centre_prior"))]]))
        out.append(_p(describe_border(bs)))
        pg = _d(v.explain.get("pointing_game"))
        if pg:
            on = f", measured on {_s(pg.get('on'))}" if pg.get("on") else ""
            out.append(_p(
                f"Pointing game: the Grad-CAM maximum falls inside the recorded object box for "
                f"{fmt_pct(pg.get('hit_rate'))} of {fmt_int(pg.get('n'))} images{on}."))
        else:
            out.append(_note("The pointing game was not computed (it needs object boxes, "
                             "which only generated data records)."))
    else:
        out.append(_note("Grad-CAM explanations were not computed for this study."))
        out += [b for b in v.figs("grad-cam") if b["type"] == "figure"]
    return out


def _diff_ci(d: dict[str, Any]) -> str:
    diff = num(d.get("diff"))
    if diff is None:
        return NA
    lo, hi = num(d.get("lo")), num(d.get("hi"))
    ci = f" [{fmt_auc(lo)}, {fmt_auc(hi)}]" if lo is not None and hi is not None else ""
    return f"{diff:+.3f}{ci}"


def _sec_constrained_improvement(v: _View) -> list[Block]:
    """10 Constrained improvement."""
    out: list[Block] = []
    out.append(_p(
        f"The one change: {v.ckey} goes from {v.cbase} (baseline) to {v.cvar} (variant); no "
        "other setting, seed or data split differs, so any difference is attributable to it "
        "(up to training noise)."))
    out.append(_p(_cap(v.accuracy_change()) + "."))
    tracked = [f for f in v.top if _d(f.get("variant"))]
    if v.trk or tracked:
        out.append(_p(describe_tracking(v.trk or {"tracked": len(tracked)})))
        out.append(_table(
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
        out.append(_note("Failure tracking was not computed."))
    out += _notes_blocks(v)
    out += v.figs("constrained-improvement", "gradcam_tracking")
    return out


def _sec_comparison(v: _View) -> list[Block]:
    """11 Comparison & statistics."""
    out: list[Block] = []
    out.append(_p(" ".join(filter(None, [_cap(v.accuracy_change(from_to=False)) + ".",
                                         v.noise_text()]))))
    if v.seed_level:
        out.append(_h3(f"One pair: seed {_s(v.pair_seed)} (supporting detail)"))
        out.append(_p(
            f"For the seed-{_s(v.pair_seed)} pair alone the difference is "
            f"{fmt_points(v.acc.get('diff', v.diff), signed=True)} points (95% CI "
            f"[{fmt_points(v.acc.get('lo'))}, {fmt_points(v.acc.get('hi'))}], "
            f"McNemar's exact test {p_clause(v.mc.get('p_value'))}); it covers {NOISE_PAIR}."))
    if v.acc:
        lvl = num(v.acc.get("level")) or 0.95
        out.append(_table(
            ["Difference (variant − baseline)", f"{lvl * 100:g}% CI low",
             f"{lvl * 100:g}% CI high", "Standard error", "Method"],
            [[fmt_points(v.acc.get("diff"), signed=True) + " points", fmt_points(v.acc.get("lo")),
              fmt_points(v.acc.get("hi")), fmt_points(v.acc.get("se")),
              METHOD_TEXT.get(str(v.acc.get("method")), _s(v.acc.get("method")))]],
            align="rrrrl", caption="Paired accuracy difference on the test images"
            + (f" (seed-{_s(v.pair_seed)} pair; covers {NOISE_PAIR})"
               if v.pair_seed is not None else f" (covers {NOISE_PAIR})")))
    else:
        out.append(_note("The accuracy-difference confidence interval was not computed."))
    if v.mc:
        out.append(_h3("McNemar's exact test"))
        out.append(_table(
            ["", "Variant right", "Variant wrong"],
            [["Baseline right", fmt_int(v.mc.get("both_right")), fmt_int(v.mc.get("a_only"))],
             ["Baseline wrong", fmt_int(v.mc.get("b_only")), fmt_int(v.mc.get("both_wrong"))]],
            caption=f"Paired outcomes on {fmt_int(v.mc.get('n'))} test images; "
                    f"{p_clause(v.mc.get('p_value'))} (two-sided exact binomial on the "
                    f"discordant images, statistic {fmt_int(v.mc.get('statistic'))})"))
        sig = ("significant" if (num(v.mc.get("p_value")) is not None
                                 and num(v.mc.get("p_value")) < ALPHA)  # type: ignore[operator]
               else "not significant")
        out.append(_p(
            f"The variant fixed {fmt_int(v.mc.get('b_only'))} images the baseline got wrong and "
            f"broke {fmt_int(v.mc.get('a_only'))} it got right; only these discordant images "
            f"carry evidence. McNemar's exact test: {p_clause(v.mc.get('p_value'))}"
            # with several seeds the verdict is the seed-level test's alone: no second one here
            + ("." if v.seed_level else
               f", {sig} at the {_alpha_text(ALPHA)} level for these two trained models "
               f"({NOISE_PAIR}).")))
    else:
        out.append(_note("McNemar's test was not computed."))
    pc = _d(v.comp.get("per_class"))
    for kind, title in (("improved", "Most improved classes"),
                        ("worsened", "Most worsened classes")):
        items = [_d(x) for x in _l(pc.get(kind))][:10]
        if items:
            out.append(_table(
                ["Class", "Test images", "Baseline", "Variant", "Change (points)",
                 "95% CI (Newcombe)"],
                # stats.per_class_changes calls them acc_a / acc_b: accept either name
                [[_s(x.get("name")), fmt_int(x.get("n")), fmt_pct(_first(x, "before", "acc_a")),
                  fmt_pct(_first(x, "after", "acc_b")),
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
        out.append(_p(_cap("; ".join(bits)) + f". {PER_CLASS_CI_NOTE[:1].upper()}"
                      f"{PER_CLASS_CI_NOTE[1:]}, so no class-level change is called significant "
                      "here."))
    else:
        out.append(_note("Per-class changes were not computed."))
    out += v.figs("comparison", "confusion_difference", "per_class_changes")
    out.append(_h3("Across seeds"))
    out.append(_p(describe_seeds(v.seeds_block, ALPHA, _l(v.sm.get("seeds")))))
    ps_a = {_s(_d(x).get("seed")): _d(x).get("test_top1") for x in _l(v.base.get("per_seed"))}
    ps_b = {_s(_d(x).get("seed")): _d(x).get("test_top1") for x in _l(v.var.get("per_seed"))}
    per_seed_mc = [_d(x) for x in _l(_d(v.seeds_block).get("mcnemar_per_seed"))]
    if per_seed_mc:
        out.append(_table(
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
        out.append(_table(["Seed", "Baseline test top-1", "Variant test top-1"],
                          [[s, fmt_pct(ps_a.get(s)), fmt_pct(ps_b.get(s))]
                           for s in dict.fromkeys(list(ps_a) + list(ps_b))],
                          caption="Per-seed test accuracy"))
    return out


Z95 = 1.959963984540054
PER_CLASS_CI_NOTE = ("intervals: Newcombe's hybrid Wilson score method for a difference of two "
                     "proportions over that class's test images, treating the arms as "
                     "independent (wider than a paired interval when the two models agree on "
                     "many images); they cover test-image sampling only and are not adjusted "
                     "for picking the largest changes out of all classes")


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, c - h), min(1.0, c + h)


def newcombe_diff_ci(k_a: float, n_a: float, k_b: float, n_b: float,
                     z: float = Z95) -> tuple[float, float]:
    """95% interval for p_b - p_a (Newcombe 1998, method 10: hybrid score, independent)."""
    pa, pb = k_a / n_a, k_b / n_b
    la, ua = wilson(k_a, n_a, z)
    lb, ub = wilson(k_b, n_b, z)
    d = pb - pa
    return (d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2),
            d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2))


def class_change_ci(x: dict[str, Any]) -> tuple[float, float] | None:
    """The Newcombe interval of one per-class change (needs its image count n)."""
    n = num(x.get("n"))
    a, b = num(_first(x, "before", "acc_a")), num(_first(x, "after", "acc_b"))
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


NOTES_FILE = StudyFolder.NOTES
MAX_NOTES_BYTES = 1024 * 1024
_NOTE_HEADING = re.compile(r"^##[ \t]+(?:(study)|test[ \t]+(\d+))[ \t]*$", re.IGNORECASE)


def read_notes(study_dir: Path) -> dict[str, list[str]]:
    """STUDY/notes.md as {"study": [paragraphs], "test 1234": [paragraphs], ...}; {} without a
    file. Format: '## study' and '## test INDEX' headings (INDEX: the test image's dataset index,
    as in the failure tables), each followed by free text; paragraphs are separated by blank
    lines. Anything before the first '## ' heading is ignored (e.g. a '# title'). The text is
    the user's: the report shows it escaped, as plain paragraphs, never as HTML or Markdown.
    Raises CifarlensError, naming the line, for any other '## ' heading or a repeated one."""
    path = Path(study_dir) / NOTES_FILE
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > MAX_NOTES_BYTES:
            raise CifarlensError(f"{path}: larger than {MAX_NOTES_BYTES // 1024} KB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CifarlensError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CifarlensError(f"{path}: cannot be read ({e.strerror or e})") from None
    notes: dict[str, list[str]] = {}
    key: str | None = None
    lines: dict[str, list[str]] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith("##") and not line.startswith("###"):
            m = _NOTE_HEADING.match(line.strip())
            if not m:
                raise CifarlensError(
                    f"{path} line {no}: heading {clean_text(line.strip())[:60]!r} is not "
                    "'## study' or '## test INDEX' (INDEX: a test image's dataset index)")
            key = "study" if m.group(1) else f"test {int(m.group(2))}"
            if key in lines:
                raise CifarlensError(f"{path} line {no}: a second '## {key}' heading")
            lines[key] = []
        elif key is not None:
            lines[key].append(line)
    for k, ls in lines.items():
        paras = [" ".join(x.strip() for x in block.splitlines() if x.strip())
                 for block in re.split(r"\n[ \t]*\n", "\n".join(ls))]
        notes[k] = [clean_text(p) for p in paras if p]
    return notes


def _notes_blocks(v: _View) -> list[Block]:
    """The notes on the tracked failures, each under its failure; then any other test image."""
    items = []
    tracked = {str(_s(f.get("index"))): f for f in v.top}
    for key, paras in v.notes.items():
        if not key.startswith("test ") or not paras:
            continue
        idx = key.split()[1]
        f = tracked.get(idx)
        if f is not None:
            st = STATUS_TEXT.get(str(_d(f.get("variant")).get("status")), "")
            title = (f"#{_s(f.get('rank'))}, test image {idx}: true {_s(f.get('true_name'))}, "
                     f"baseline said {_s(f.get('pred_name'))}" + (f"; variant: {st}" if st else ""))
        else:
            title = f"Test image {idx} (not among the tracked failures)"
        items.append({"title": title, "paras": paras, "id": f"note-test-{idx}",
                      "rank": num(f.get("rank")) if f else None})
    if not items:
        return []
    items.sort(key=lambda x: (x["rank"] is None, x["rank"] or 0))
    return [_h3(f"Notes ({NOTES_FILE})"), {"type": "notes", "items": items}]


def _sec_complexity(v: _View) -> list[Block]:
    """12 Complexity."""
    out: list[Block] = []
    out.append(_table(
        ["Model", "Parameters", "Parameters (M)", "FLOPs"],
        [["Baseline CNN", fmt_int(v.base.get("params")), fmt_params_m(v.base.get("params")),
          fmt_flops(v.base.get("flops"))],
         ["Variant CNN", fmt_int(v.var.get("params")), fmt_params_m(v.var.get("params")),
          fmt_flops(v.var.get("flops"))]],
        caption="Model complexity (forward pass, one 32×32 image)"))
    out.append(_p(_describe_cost(v.base, v.var, v.ckey,
                                 v.verdict() if v.seed_level else "")))
    return out


def _sec_reflection(v: _View) -> list[Block]:
    """13 Reflection."""
    return [_list(_reflection(v))]


def _sec_reproducibility(v: _View) -> list[Block]:
    """14 Reproducibility."""
    out: list[Block] = []
    seeds_txt = ", ".join(_s(s) for s in _l(v.sm.get("seeds"))) or _s(v.cfg.get("seed"))
    rrows = [["Seed(s)", seeds_txt], ["Created", _s(v.sm.get("created"))]]
    rrows += [[_s(k), _s(val)] for k, val in v.env.items()]
    timing = _d(v.sm.get("timing"))
    if "total_s" in timing:
        rrows.append(["Total time", _dur(timing.get("total_s"))])
    out.append(_table(["Item", "Value"], rrows, align="ll", caption="Environment"))
    out.append({"type": "code", "label": "Command that produced this study:",
                "text": _s(v.sm.get("command"), "not recorded")})
    out.append({"type": "code", "label": "Rebuild this report without retraining:",
                "text": "cifarlens report " + shlex.quote(str(v.study_dir))})
    return out


# Each section of SECTIONS and the function that builds it, named here (not looked up by name).
SECTION_BUILDERS: dict[str, Any] = {
    "replication": _sec_replication,
    "ablation": _sec_ablation,
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
    from .. import __version__

    v = _View(summary, study_dir)
    sections = []
    for sid, title in SECTIONS:
        blocks = SECTION_BUILDERS[sid](v)
        if blocks is None:  # the section does not apply to this study (ablation: 2+ changes)
            continue
        i = len(sections) + 1
        heading = f"{i} {title}"
        sections.append({"id": sid, "num": i, "title": title, "heading": heading,
                         "slug": _gh_slug(heading), "blocks": blocks,
                         "open": sid not in COLLAPSED})
    if v.placed["appendix"]:
        heading = "Appendix: other figures"
        sections.append({"id": "appendix", "num": None, "title": heading, "heading": heading,
                         "slug": _gh_slug(heading), "open": True,
                         "blocks": [{"type": "figure", "fig": f} for f in v.placed["appendix"]]})
    from ..browse import table_context
    from ..figures import ARM_COLORS

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


def _first(d: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` whose value is not None."""
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _dur(x: Any) -> str:
    f = num(x)
    if f is None:
        return NA
    if f < 60:
        return f"{f:.1f} s"
    if f < 3600:
        return f"{f / 60:.1f} min"
    return f"{f / 3600:.2f} h"


def _describe_cost(base: dict[str, Any], var: dict[str, Any], ckey: str,
                   verdict: str = "") -> str:
    """Parameters and FLOPs of the variant against the baseline. "The gain is free at inference
    time" only when `verdict` is the seed-level test's "rose" (the change helped)."""
    pa, pb, fa, fb = (num(x) for x in (base.get("params"), var.get("params"),
                                       base.get("flops"), var.get("flops")))
    if pa is None or pb is None:
        return "Parameter counts were not recorded for both models."
    if pa == pb and (fa is None or fb is None or fa == fb):
        return (f"The change ({ckey}) adds no parameters or FLOPs"
                + (": its gain is free at inference time." if verdict == "rose" else "."))
    dp = pb - pa
    if dp == 0:
        out = "The variant has the same number of parameters"
    else:
        out = f"The variant has {fmt_int(abs(dp))} {'more' if dp > 0 else 'fewer'} parameters"
        if pa:  # a relative change needs a nonzero base
            out += f" ({dp / pa * 100:+.2f}%)"
    if fa and fb is not None and fa != fb:
        out += f" and {(fb - fa) / fa * 100:+.2f}% FLOPs"
    return out + " than the baseline."


def _reflection(v: _View) -> list[str]:
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


