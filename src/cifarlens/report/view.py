"""What the sections read: the study summary with the paths and runs it names."""

from __future__ import annotations

from pathlib import Path

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
    change_verdict,
    describe_pair,
    describe_seed_level,
)
from cifarlens.study.schema import StudySummary, to_json


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

    def verdict(self) -> str:
        """The one verdict the report states: from the seed-level t-test when the study ran
        2+ seeds, else from the one pair's McNemar test and paired CI."""
        if self.seed_level:
            sb = self.seeds_block
            return change_verdict(sb.mean_diff, *sb.ci, sb.p_value)
        return change_verdict(self.diff, self.acc.lo, self.acc.hi, self.mc.p_value)

    def accuracy_change(self, from_to: bool = True) -> str:
        """The headline clause: the seed-level result, or one pair's result said as such."""
        if self.seed_level:
            return describe_seed_level(to_json(self.seeds_block))
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
