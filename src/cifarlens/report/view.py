"""What the sections read: the study summary with the paths and runs it names."""

from __future__ import annotations

from pathlib import Path

from cifarlens.analysis.power import decide, sd_from_interval
from cifarlens.report.blocks import Block, note_block
from cifarlens.report.constants import (
    FIGURES,
    FIRST_SCREEN_FIGURES,
    SECTIONS,
    UNSET,
)
from cifarlens.report.embed import Figure, load_figure
from cifarlens.report.formats import (
    _s,
    change_text,
    clean_text,
    dataset_title,
)
from cifarlens.report.notes import read_notes
from cifarlens.report.sentences import (
    NOISE_PAIR,
    NOISE_SEEDS,
    describe_pair,
)
from cifarlens.report.verdicts import describe_decision, headline_decision
from cifarlens.study.schema import StudySummary, Variant, to_json

# The verdict settings of a summary written before they were recorded (issue 22's defaults).
DEFAULT_MARGIN = DEFAULT_DETECT = 0.01


def decision_of(s: StudySummary, var: Variant, p_adjusted: float | None = None) -> dict | None:
    """A change's decision record (power.decide) as summary.json holds it; for a summary
    written before the record existed, the same rule computed from its seed block with the
    default margin (and the ablation's Holm p), so every summary is judged alike. None with one
    seed (no seed-level test)."""
    sb = var.comparison.seeds
    if sb is None:
        return None
    if sb.decision is not None and p_adjusted is None:
        return to_json(sb.decision)
    vs = s.verdicts
    return decide({"n": sb.n, "mean_diff": sb.mean_diff, "std_diff": sb.std_diff},
                  vs.margin if vs else DEFAULT_MARGIN, p_adjusted=p_adjusted,
                  detect=vs.detect if vs else DEFAULT_DETECT).as_dict()


def row_decisions(s: StudySummary) -> dict[str, dict | None]:
    """Each ablation row's decision by slug: the row's record, or the rule with its Holm p."""
    out: dict[str, dict | None] = {}
    if s.ablation is None:
        return out
    vs = s.verdicts
    for r in s.ablation.rows:
        out[r.slug] = to_json(r.decision) if r.decision is not None else row_decision(
            to_json(r), s.ablation.level, vs.margin if vs else DEFAULT_MARGIN,
            vs.detect if vs else DEFAULT_DETECT)
    return out


def row_decision(row: dict, level: float = 0.95, margin: float = DEFAULT_MARGIN,
                 detect: float = DEFAULT_DETECT) -> dict | None:
    """An ablation row's decision: its record, or for a row written before the record, the
    rule on the row's own numbers (the SD its t interval implies, its Holm p). None with one
    seed (no seed-level test)."""
    if row.get("decision"):
        return row["decision"]
    n = int(row.get("n_seeds") or 0)
    if n < 2:
        return None
    sd = sd_from_interval(row.get("lo"), row.get("hi"), n, level) or 0.0  # none: constant
    return decide({"n": n, "mean_diff": row.get("diff"), "std_diff": sd}, margin,
                  p_adjusted=row.get("p_holm"), detect=detect).as_dict()


def main_decision(s: StudySummary) -> dict | None:
    """The decision about the main change: with several changes the first change's ablation
    row (Holm-adjusted), so the headline and the table agree; else its seed block's. None
    with one seed."""
    rows = [{"slug": k, "decision": d} for k, d in row_decisions(s).items()]
    return headline_decision({"decision": decision_of(s, s.main)},
                             {"rows": rows} if rows else None, s.main.slug)


class View:
    """The typed summary every section reads, with the names sections use for its parts, the
    study's notes, and its figures, numbered in order of appearance."""

    def __init__(self, summary: StudySummary, study_dir: Path) -> None:
        self.study_dir = Path(study_dir)
        self.s = s = summary
        self.main = main = s.main
        self.base, self.var = s.baseline, main.model
        self.bt, self.vt = self.base.test, self.var.test
        self.change = main.change
        self.comp = comp = main.comparison
        self.acc, self.mc = comp.accuracy_difference, comp.mcnemar
        self.seeds_block = comp.seeds
        # The verdict about the change needs seed-to-seed variation: 2+ paired seeds.
        self.n_seeds = self.seeds_block.n if self.seeds_block else 0
        self.seed_level = self.n_seeds >= 2
        self.pair_seed = comp.pair_seed if comp.pair_seed is not None else (s.seeds or [None])[0]
        self.fails = s.failures
        self.trk = main.failures.tracking
        self.top = main.failures.top
        self.explain = s.explain
        self.env = s.environment
        self.split = s.split
        self.cfg = s.config
        self.dataset = dataset_title(s)
        self.user_data = s.data_source == "user"
        self.generated = s.data_source == "generated"
        self.ckey = _s(self.change.key)
        # None is a real setting value here (e.g. train_limit=None: use all images)
        self.cbase, self.cvar = (_s(x, UNSET) for x in (self.change.baseline,
                                                        self.change.variant))
        self.change_text = f"{self.ckey}: {self.cbase} → {self.cvar}"
        self.diff = self.acc.diff
        self.figs_in = {**s.figures, **main.figures}
        self.notes = read_notes(self.study_dir)
        self._place_figures()

    def _place_figures(self) -> None:
        """Figures: placed in their section, numbered in order of appearance."""
        self.placed: dict[str, list[Figure]] = {sid: [] for sid, _ in SECTIONS}
        self.placed["appendix"] = []
        for key in list(FIGURES) + [k for k in self.figs_in if k not in FIGURES]:
            if self.figs_in.get(key) is not None:
                sid, cap = FIGURES.get(key, ("appendix", f"Figure '{clean_text(key)}'"))
                self.placed[sid].append(load_figure(self.study_dir, str(key),
                                                    self.figs_in[key], cap))
        # Per-change figures of a study with several changes: the first change's are placed
        # above like a one-change study's; each other change's tracking and curves here.
        if self.s.ablation:
            for var in self.s.variants[1:]:
                what = change_text(var.change.key, var.change.baseline, var.change.variant)
                for key, cap in (("gradcam_tracking", FIGURES["gradcam_tracking"][1]),
                                 ("curves", FIGURES["curves"][1] + ", baseline and variant")):
                    if var.figures.get(key) is not None:
                        self.placed["ablation"].append(load_figure(
                            self.study_dir, f"{key}_{var.slug}", var.figures[key],
                            f"{what}: {cap}"))
                if var.figures.get("robustness") is not None:  # study --robustness
                    self.placed["robustness"].append(load_figure(
                        self.study_dir, f"robustness_{var.slug}", var.figures["robustness"],
                        f"{what}: {FIGURES['robustness'][1]}"))
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

    def decision(self) -> dict | None:
        """The one decision the report states about the main change (`main_decision`)."""
        return main_decision(self.s)

    def row_decisions(self) -> dict[str, dict | None]:
        return row_decisions(self.s)

    def word(self) -> str:
        """The decision's word (helped, hurt, equivalent, ...); "" with one seed."""
        d = self.decision()
        return str(d.get("decision", "")) if d else ""

    def accuracy_change(self, from_to: bool = True) -> str:
        """The headline clause: the seed-level decision with its power, or one pair's result
        said as such."""
        dec = self.decision() if self.seed_level else None
        if dec:
            sb = self.seeds_block
            return describe_decision(dec, before=sb.mean_a if from_to else None,
                                     after=sb.mean_b if from_to else None,
                                     family=self.s.ablation.m if self.s.ablation else None)
        return describe_pair(to_json(self.acc), to_json(self.mc), self.pair_seed,
                             self.bt.top1 if from_to else None,
                             self.vt.top1 if from_to else None)

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
                out.append(note_block(f"The {cap[0].lower() + cap[1:]} figure was not produced."))
        return out
