"""What the sections read: the study summary with the paths and runs it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarlens.report.blocks import Block, note_block
from cifarlens.report.constants import (
    FIGURES,
    FIRST_SCREEN_FIGURES,
    SECTIONS,
    UNSET,
)
from cifarlens.report.embed import Figure, load_figure
from cifarlens.report.formats import (
    _d,
    _diff,
    _l,
    _s,
    ablation_change,
    clean_text,
    dataset_title,
)
from cifarlens.report.notes import read_notes
from cifarlens.report.sentences import (
    NOISE_PAIR,
    NOISE_SEEDS,
    _seed_ci,
    _seed_n,
    change_verdict,
    describe_pair,
    describe_seed_level,
)


class View:
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
                what = ablation_change({"key": _d(var.get("change")).get("key"),
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
                out.append(note_block(f"The {cap[0].lower() + cap[1:]} figure was not produced."))
        return out
