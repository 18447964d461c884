"""The report's page, index.html, read as a paper appendix: first the headline (every system of the study at the
fusion size; for the transfer matrix, the best source per target and every system across targets), then the
verdicts as one table under their rule, stated once, with the forest plot (the heatmap for the matrix), the other
figures with captions, the notebooks and tables, and provenance.

Numbers on the page are rounded for reading; the CSVs beside it keep full precision (the headline as headline.csv).
``write_single_file`` writes the same page as one self-contained file to mail, and ``screenshot`` photographs the
top of a page in headless Chromium; ``rewrite_index`` writes a finished report's page again from its folder
(``fusionkit page REPORT`` does all three without rerunning the report).
"""
from __future__ import annotations

import base64
import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusionkit._io import atomic_write
from fusionkit.errors import ConfigError
from fusionkit.evaluation.gains import learning_curve
from fusionkit.evaluation.verdicts import compare_pairs

REFERENCE = "finetune"  # the target-only baseline every study runs; the headline's gains are over it
STUDY_ROLES = ("fusion", "baseline")  # controls and ablations serve a system: they are not systems of the study
HEADLINE = "headline.csv"
FOREST, HEATMAP = "05_gains_vs_control", "06_transfer_matrix"
SUMMARY_SECTION = "In short"  # a verdicts.json section of answers in words (the matrix report writes one)
ADVICE_SECTION = "Advice"  # what to use and what to try next (``findings.advice``), shown under the answers
RULE_NOTE = "Verdict rule:"  # a verdicts.json note the page states once, above its verdict table
# Verdicts in words, each with a symbol and a colour class (Okabe-Ito blue and vermillion: colour-blind safe):
# the symbol and the word carry the verdict, the colour only repeats it.
VERDICT_MARKS = {"helps": ("▲", "up"), "better": ("▲", "up"), "hurts": ("▼", "down"), "worse": ("▼", "down"),
                 "equivalent": ("=", "flat"), "inconclusive": ("○", "flat")}
LINKED_TABLES = ("headline.csv", "verdict_table.csv", "transfer_matrix.csv", "selection.csv",
                 "selection_by_target.csv", "across_targets.csv", "asymmetry.csv", "beyond_sequential.csv",
                 "source_estimates.csv", "results.csv", "summary.csv", "tuning.csv", "overlap_card.csv",
                 "overlap_after.csv", "experts.csv", "source_effects.csv", "selection_noise_ceiling.csv")
STYLE = """
:root{--up:#0072b2;--down:#d55e00;--flat:#595959}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f1f1f;max-width:1180px;
 margin:0 auto;padding:1em 1.5em}
h1{font-size:1.45em;line-height:1.3;margin-bottom:.2em}
h2{font-size:1.2em;border-bottom:1px solid #d0d0d0;margin-top:2em}
h3{font-size:1.02em;margin-top:1.5em}
h4{font-size:.95em;margin:1.2em 0 .3em}
.meta{color:#555;margin-top:0}
.stale{background:#fff4e5;border-left:4px solid #e08a00;padding:.5em .8em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
th,td{border-bottom:1px solid #e2e2e2;padding:3px 9px;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #8c8c8c;vertical-align:bottom}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.best td,td.best{background:#eef4fa;font-weight:600}
.verdict{white-space:nowrap;font-weight:600}
.up{color:var(--up)}.down{color:var(--down)}.flat{color:var(--flat)}
.rule,.note{font-size:.9em;background:#f6f6f6;border-left:3px solid #b0b0b0;padding:.45em .8em;margin:.6em 0}
figure{margin:1.5em 0}
img{max-width:100%;height:auto}
figure img{max-width:min(100%,900px);display:block}
figcaption{font-size:.9em;color:#333;margin-top:.3em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85em;background:#f6f6f6;padding:.6em}
.provenance td{overflow-wrap:anywhere}
"""


# ---------------------------------------------------------------- numbers for reading

def _points(value: float, signed: bool = False) -> str:
    return "—" if pd.isna(value) else f"{value:{'+' if signed else ''}.1f}"


def _interval(mean: float, low: float, high: float, n: int, signed: bool = False) -> str:
    """"mean [low, high]"; a single run or the same result on every seed has no interval and says so."""
    if pd.isna(mean):
        return "—"
    if n <= 1:
        return f"{_points(mean, signed)} (one run)"
    if pd.isna(low) or np.isclose(low, high):
        return f"{_points(mean, signed)} (deterministic)"
    return f"{_points(mean, signed)} [{_points(low, signed)}, {_points(high, signed)}]"


def _p(value: float) -> str:
    return "—" if pd.isna(value) else "<0.001" if value < 0.001 else f"{value:.2g}"


def _count(value: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value / 1e3:.1f} k" if value >= 1e3 else f"{value:.0f}"


def _seconds(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


# ---------------------------------------------------------------- HTML pieces

def _text(value) -> str:
    return html.escape(str(value))


def _verdict(verdict) -> str:
    """A verdict cell: symbol, word and colour; anything else (not tested, a reference) in plain words."""
    if not isinstance(verdict, str) or not verdict:
        return "<td>—</td>"
    symbol, colour = next((mark for word, mark in VERDICT_MARKS.items() if verdict.startswith(word)), ("–", "flat"))
    return f"<td class='verdict {colour}'>{symbol} {_text(verdict)}</td>"


def _table(header: list[str], rows: list[list[str]], row_attributes: list[str] | None = None,
           name: str = "") -> str:
    """A table whose cells are HTML already (``<td>...``), in its own scrolling box: wide tables never widen
    the page."""
    head = "".join(f"<th>{_text(column)}</th>" for column in header)
    attributes = row_attributes or [""] * len(rows)
    body = "".join(f"<tr{extra}>{''.join(cells)}</tr>" for extra, cells in zip(attributes, rows))
    data = f" data-table='{_text(name)}'" if name else ""
    return f"<div class='scroll'><table{data}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _num(text: str) -> str:
    return f"<td class='num'>{_text(text)}</td>"


def _cell(text) -> str:
    return f"<td>{_text(text)}</td>"


@dataclass
class _Page:
    """Where the page's images and links point: into the report folder, or (``embed``) into the page itself."""

    out: Path
    embed: bool = False

    def link(self, name: str, written: bool = False) -> str:
        """A link to a file of the folder (``written``: one written with the page), else its name."""
        if self.embed or not (written or (self.out / name).is_file()):
            return f"<code>{_text(name)}</code>"
        return f"<a href='{_text(name)}'>{_text(name)}</a>"

    def figure(self, name: str, caption: str, number: int) -> str:
        png = self.out / "figures" / f"{name}.png"
        if not png.is_file():
            return ""
        if self.embed:
            source, svg = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii"), ""
        else:
            source = f"figures/{name}.png"
            svg = f" (<a href='figures/{_text(name)}.svg'>SVG</a>)" if png.with_suffix(".svg").is_file() else ""
        return (f"<figure id='{_text(name)}'><img src='{_text(source)}' alt='{_text(caption)}'>"
                f"<figcaption><b>Figure {number}.</b> {_text(caption)} <i>({_text(name)})</i>{svg}</figcaption>"
                f"</figure>")

    def csv(self, name: str) -> pd.DataFrame | None:
        path = self.out / name
        if not path.is_file():
            return None
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        # a report made before the simultaneous intervals (protocol 2) called its adjusted p-values p_holm
        return table.rename(columns=lambda c: c.replace("p_holm", "p_adjusted") if "selection" not in name else c)


# ---------------------------------------------------------------- the headline

def system_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per system and train size: accuracy (mean and 95% t-interval over seeds), macro-F1, ECE, trainable
    parameters and training seconds (means); most accurate first."""
    accuracy = learning_curve(runs, "accuracy", by=("system",)).rename(
        columns={"mean": "accuracy", "ci_low": "accuracy_ci_low", "ci_high": "accuracy_ci_high"})
    failed = runs["failed"].astype(float) if "failed" in runs else pd.Series(np.nan, index=runs.index)
    means = (runs.assign(failed=failed).groupby(["system", "train_size"])
             .agg(role=("role", "first"), macro_f1=("macro_f1", "mean"), ece=("ece", "mean"),
                  trainable_params=("trainable_params", "mean"), train_seconds=("train_seconds", "mean"),
                  failed_runs=("failed", lambda flags: flags.sum(min_count=1)))
             .reset_index())
    return accuracy.merge(means, on=["system", "train_size"]).sort_values(
        ["accuracy", "system"], ascending=[False, True], ignore_index=True)


def headline_table(results: pd.DataFrame, fusion_size: int, verdicts: dict[str, tuple[str, str]],
                   alpha: float = 0.05, min_effect: float = 0.0) -> pd.DataFrame:
    """Every system of the study (fusion systems and target-only baselines; not their controls and ablations)
    at ``fusion_size``: ``system_summary``, the gain over finetune in accuracy points paired over seeds with its
    interval, simultaneous over the systems (``compare_pairs``), the verdict and what it was judged against (``verdicts``: system ->
    (verdict, reference)), and ``best`` for the most accurate."""
    runs = results[results["role"].isin(STUDY_ROLES) & (results["train_size"] == fusion_size)]
    table = system_summary(runs)
    pairs = [(system, REFERENCE) for system in table["system"] if system != REFERENCE]
    gains = pd.DataFrame(columns=["system", "gain_vs_finetune", "gain_ci_low", "gain_ci_high"])
    if REFERENCE in set(table["system"]) and pairs:
        gains = compare_pairs(runs, pairs, metric="accuracy", alpha=alpha, min_effect=min_effect)[
            ["system", "gain", "ci_low", "ci_high"]].set_axis(list(gains.columns), axis=1)
    table = table.merge(gains, on="system", how="left")
    table["verdict"] = [verdicts.get(system, (None, None))[0] for system in table["system"]]
    table["judged_against"] = [verdicts.get(system, (None, None))[1] for system in table["system"]]
    table["best"] = table["accuracy"] == table["accuracy"].max()
    first = ["system", "role", "train_size", "n_seeds"]
    return table[first + [column for column in table.columns if column not in first]]


def _headline_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in table.itertuples():
        name = f"★ {row.system}" if row.best else row.system
        rows.append([_cell(name), _cell(row.role),
                     _num(_interval(100 * row.accuracy, 100 * row.accuracy_ci_low, 100 * row.accuracy_ci_high,
                                    row.n_seeds)),
                     _num(_points(100 * row.macro_f1)), _num(f"{row.ece:.3f}"),
                     _num(_interval(row.gain_vs_finetune, row.gain_ci_low, row.gain_ci_high, row.n_seeds, True)
                          if row.system != REFERENCE else "reference"),
                     _verdict(row.verdict), _num(_failed(row.failed_runs, row.n_seeds)),
                     _num(_count(row.trainable_params)), _num(_seconds(row.train_seconds))])
    return rows


def _failed(count: float, runs: int) -> str:
    return "–" if pd.isna(count) else f"{int(count)} of {int(runs)}"


def _verdicts_by_system(page: _Page, fusion_size: int) -> dict[str, tuple[str, str]]:
    """system -> (verdict, reference): a fusion system against its matched control, a baseline against finetune."""
    found = {}
    for name in ("comparisons_knowledge.csv", "comparisons_baselines.csv"):
        table = page.csv(name)
        if table is not None and len(table):
            at_size = table[table["train_size"] == fusion_size]
            found.update({row.system: (row.verdict, row.baseline) for row in at_size.itertuples()})
    return found


def _target_headline(page: _Page, record: dict) -> tuple[str, pd.DataFrame | None]:
    results = page.csv("results.csv")
    if results is None or results.empty:
        return "<p>No results.csv: the study wrote no results, so there is no headline table.</p>", None
    parameters = record.get("parameters", {}).get("study_parameters", {})
    fusion_size = parameters.get("fusion_size", int(results["train_size"].mode().iloc[0]))
    table = headline_table(results, fusion_size, _verdicts_by_system(page, fusion_size),
                           parameters.get("alpha", 0.05), parameters.get("min_effect", 0.0))
    if table.empty:
        return (f"<p>No system of the study ran at its fusion size (n={fusion_size}), so there is no headline table; "
                f"every run is in {page.link('results.csv')}.</p>"), None
    header = ["system", "kind", "accuracy %", "macro-F1 %", "ECE", "gain over finetune (points)", "verdict",
              "failed runs", "trainable params", "train (s)"]
    rows = [f" data-system='{_text(s)}'" + (" class='best'" if best else "")
            for s, best in zip(table["system"], table["best"])]
    seeds = int(table["n_seeds"].max())
    parts = [f"<h2>Headline: every system of the study at n={fusion_size}</h2>",
             _table(header, _headline_rows(table), rows, name="headline"),
             f"<p class='note'>Mean over {seeds} seed{'s' * (seeds != 1)} [95% t-interval over seeds]; the gain over "
             f"finetune in accuracy points, paired by seed [interval simultaneous over the systems]. Verdict: a fusion system against its matched control, a "
             f"baseline against finetune (the rule is under Verdicts). ★ most accurate. Failed runs (Dodge et al. "
             f"2020): validation accuracy at or below the majority-class rate, or more than 10 points below the "
             f"linear probe's at the same size; they stay in every mean. Controls and ablations are "
             f"in the tables below. Full precision: {page.link(HEADLINE, written=True)}.</p>"]
    baselines = results[results["role"] == "baseline"]
    if baselines["train_size"].nunique() > 1:
        by_size = system_summary(baselines).sort_values(["system", "train_size"], ignore_index=True)
        parts += ["<h3>Target-only baselines at each training size</h3>",
                  _table(["system", "train size", "accuracy %", "macro-F1 %", "ECE", "trainable params",
                          "train (s)"],
                         [[_cell(r.system), _num(str(r.train_size)),
                           _num(_interval(100 * r.accuracy, 100 * r.accuracy_ci_low, 100 * r.accuracy_ci_high,
                                          r.n_seeds)),
                           _num(_points(100 * r.macro_f1)), _num(f"{r.ece:.3f}"), _num(_count(r.trainable_params)),
                           _num(_seconds(r.train_seconds))] for r in by_size.itertuples()], name="baselines")]
    return "".join(parts), table


# ---------------------------------------------------------------- the verdicts

def _rule(record: dict, tests: list[str], family: str, secondary: str) -> str:
    parameters = record.get("parameters", {}).get("study_parameters", {})
    alpha, min_effect = parameters.get("alpha", 0.05), parameters.get("min_effect", 0.0)
    return (f"<p class='rule'><b>Rule</b> (declared before the study): gains in accuracy points, mean over seeds "
            f"with a t-interval simultaneous at {1 - alpha:.0%} {_text(family)} (Bonferroni; with seeds in stages, "
            f"each comparison spends its share over the looks); test: {_text(' / '.join(tests) or 'paired t-test')} "
            f"over seeds. The verdict reads the interval shown: <span class='up'>▲ helps</span> or "
            f"<span class='down'>▼ hurts (negative transfer)</span> when it excludes 0 and |gain| ≥ {min_effect:g} "
            f"points, <span class='flat'>= equivalent</span> when it lies inside ±{min_effect:g}, otherwise "
            f"<span class='flat'>○ inconclusive</span>; against a target-only baseline the words are better / worse. "
            f"{_text(secondary)}</p>")


def _short_control(system: str, control: str) -> str:
    return control[len(system) + 2:] if control.startswith(f"{system}: ") else control


def _comparison_cells(row) -> list[str]:
    return [_num(_interval(row.gain, row.ci_low, row.ci_high, row.n_fused, True)), _num(_p(row.p_adjusted)),
            _verdict(row.verdict)]


TUNED_NOTE = (", and against its tuned control: the same procedure without the knowledge, tuned on validation with "
              "the same budget (a system that helps only against the matched control may owe its gain to a "
              "configuration the control's own tuning would not choose)")


def _knowledge_table(knowledge: pd.DataFrame, on_test_set: pd.DataFrame | None,
                     tuned: pd.DataFrame | None = None) -> str:
    """One row per fusion system: its gain over the matched control across seeds (the verdict), over its tuned
    control across seeds (where the study ran one) and over test examples (secondary)."""
    secondary = {} if on_test_set is None else {row.system: row for row in on_test_set.itertuples()}
    against_tuned = {} if tuned is None else {row.system: row for row in tuned.itertuples()}
    rows, attributes = [], []
    for row in knowledge.itertuples():
        test, best = secondary.get(row.system), against_tuned.get(row.system)
        cells = [_cell(row.system), _cell(_short_control(row.system, row.baseline)), *_comparison_cells(row)]
        if against_tuned:
            cells += _comparison_cells(best) if best is not None else ["<td>—</td>"] * 3
        cells += _comparison_cells(test) if test is not None else ["<td>—</td>"] * 3
        rows.append(cells)
        attributes.append(f" data-system='{_text(row.system)}' data-verdict='{_text(row.verdict)}'")
    header = ["system", "matched control", "gain over seeds [simultaneous interval]", "p (adjusted)", "verdict"]
    if against_tuned:
        header += ["gain over the tuned control [simultaneous interval]", "p (adjusted)", "verdict against it"]
    header += ["gain over test examples [simultaneous interval]", "p (adjusted)", "secondary verdict"]
    return _table(header, rows, attributes, name="verdicts")


def _comparison_table(table: pd.DataFrame, name: str) -> str:
    rows = [[_cell(row.system), _cell(_short_control(row.system, row.baseline)), *_comparison_cells(row)]
            for row in table.itertuples()]
    return _table(["system", "against", "gain [simultaneous interval]", "p (adjusted)", "verdict"], rows, name=name)


def _section_tables(page: _Page) -> dict[tuple[str, ...], tuple[str, pd.DataFrame]]:
    """Each comparisons_*.csv by its sentences: verdicts.json holds the same sentences under the section's title."""
    found = {}
    for path in sorted(page.out.glob("comparisons_*.csv")):
        table = page.csv(path.name)
        if table is not None and "sentence" in table:
            found[tuple(table["sentence"])] = (path.name, table)
    return found


def _target_verdicts(page: _Page, record: dict, verdicts: dict, captions: dict) -> tuple[str, list[str]]:
    """The verdict table under its rule, the forest plot, then every other section of verdicts.json as a table
    (its comparisons CSV), or in words when it has none; returns the HTML and the figures shown."""
    knowledge, on_test_set = page.csv("comparisons_knowledge.csv"), page.csv("comparisons_on_test_set.csv")
    tuned = page.csv("comparisons_tuned_control.csv")
    tuned = tuned if tuned is not None and len(tuned) else None
    parts, shown = ["<h2>Verdicts</h2>"], []
    covered = set()
    if knowledge is not None and len(knowledge):
        seeds = int(knowledge["n_fused"].max())
        secondary = ("The gain over test examples (paired permutation test, percentile bootstrap interval, "
                     "simultaneous over the same systems) is secondary: it measures this test set's noise and never changes "
                     "a verdict.") if on_test_set is not None else ""
        parts += [_rule(record, sorted(set(knowledge["test"])),
                        f"over the {len(knowledge)} fusion systems of each table ({seeds} seeds)", secondary),
                  _knowledge_table(knowledge, on_test_set, tuned),
                  f"<p class='note'>Each fusion system against its matched control: the same training without the "
                  f"knowledge{'' if tuned is None else TUNED_NOTE}. The sentences, with what more seeds would "
                  f"settle: {page.link('verdicts.json')}.</p>"]
        covered |= {tuple(knowledge["sentence"])} | ({tuple(on_test_set["sentence"])} if on_test_set is not None
                                                     else set()) | ({tuple(tuned["sentence"])} if tuned is not None
                                                                    else set())
    if FOREST in captions:
        parts.append(page.figure(FOREST, captions[FOREST], 1))
        shown.append(FOREST)
    tables = _section_tables(page)
    further = [section for section in verdicts.get("sections", [])
               if section["title"] not in (SUMMARY_SECTION, ADVICE_SECTION)
               and tuple(section["sentences"]) not in covered]
    level = "h3"
    if further and knowledge is not None and len(knowledge):
        parts.append("<h3>Further comparisons, by the same rule</h3>")
        level = "h4"
    for section in further:
        parts.append(f"<{level}>{_text(section['title'])}</{level}>")
        match = tables.get(tuple(section["sentences"]))
        if match is not None:
            parts.append(_comparison_table(match[1], match[0].removesuffix(".csv")))
        else:
            parts.append(f"<p class='note'>{_text(section['methods'])}</p><ul>"
                         + "".join(f"<li>{_text(s)}</li>" for s in section["sentences"]) + "</ul>")
    if not verdicts:
        parts.append("<p>No verdicts were written (the evaluation notebook did not run).</p>")
    return "".join(parts), shown


# ---------------------------------------------------------------- the matrix report

def best_sources(cells: pd.DataFrame) -> pd.DataFrame:
    """The transfer matrix's best source per target, as the report chose it on validation (transfer_matrix.csv's
    ``chosen``, ``matrix.best_source_on_validation``), with its interval and verdict; a report made before that
    column chose by the largest observed test gain, and is shown as it chose."""
    if "chosen" in cells:
        best = cells[cells["chosen"].astype(str).str.lower() == "true"]
    else:
        best = cells.sort_values("gain", ascending=False).groupby("target", sort=True).head(1)
    return best.sort_values("gain", ascending=False, ignore_index=True)


def _seeds(record: dict) -> int:
    return len(record.get("parameters", {}).get("study_parameters", {}).get("seeds", [0, 1]))


def _matrix_headline(page: _Page, record: dict) -> tuple[str, pd.DataFrame | None]:
    cells, across = page.csv("transfer_matrix.csv"), page.csv("across_targets.csv")
    seeds = _seeds(record)
    parts, best = [], None
    if cells is not None and len(cells):
        best = best_sources(cells)
        choice = ("Each target's source chosen by the validation accuracy of sequential transfer from it (a tie or "
                  "a thin choice is named in transfer_matrix.csv's choice column), with its test gain over its "
                  "matched control" if "chosen" in cells else
                  "By the observed gain of sequential transfer over its matched control")
        rows = [[_cell(r.target), _cell(f"{r.source}{' ' + r.mark if isinstance(r.mark, str) else ''}"),
                 _num(_interval(r.gain, r.ci_low, r.ci_high, seeds, True)), _num(_p(r.p_adjusted)),
                 _verdict(r.verdict), _num(_p(r.test_set_p_adjusted))] for r in best.itertuples()]
        parts += ["<h2>Headline: the best source for each target</h2>",
                  _table(["target", "best source", "gain, points [simultaneous interval]", "p (adjusted)", "verdict",
                          "p over test examples (adjusted)"], rows,
                         [f" data-target='{_text(t)}'" for t in best["target"]], name="best-sources"),
                  f"<p class='note'>{choice} (rule under Verdicts); † significant only over test examples. Full precision: "
                  f"{page.link(HEADLINE, written=True)}.</p>"]
    if across is not None and len(across):
        systems = [c for c in across.columns if c not in ("target", "sequential_source")]
        rows = []
        for r in across.to_dict("records"):
            top = max(systems, key=lambda s: r[s])
            rows.append([_cell(r["target"]), *[f"<td class='num{' best' * (s == top)}'>"
                                                f"{'★ ' * (s == top)}{_points(r[s])}</td>" for s in systems],
                         _cell(r.get("sequential_source", ""))])
        parts += ["<h3>Every system on every target: accuracy %, mean over seeds</h3>",
                  _table(["target", *systems, "source chosen on validation"], rows, name="across-targets"),
                  f"<p class='note'>★ most accurate on that target. {page.link('across_targets.csv')}</p>"]
    return "".join(parts), best


def _matrix_verdicts(page: _Page, record: dict, captions: dict) -> tuple[str, list[str]]:
    cells, families, selection = (page.csv(name) for name in ("transfer_matrix.csv", "comparisons_families.csv",
                                                              "selection.csv"))
    parts, shown, seeds = ["<h2>Verdicts</h2>"], [], _seeds(record)
    tests = sorted(set(families["test"])) if families is not None and len(families) else []
    n_cells, n_families = 0 if cells is None else len(cells), 0 if families is None else len(families)
    family = (f"over one family of every fusion comparison of the matrix: its {n_cells} cells and its {n_families} "
              f"fusion-over-all-sources comparisons together ({n_cells + n_families})")
    parts.append(_rule(record, tests, family, "† marks a gain significant only over test examples (paired "
                                              "permutation test, secondary: it never changes a verdict)."))
    if HEATMAP in captions:
        parts.append(page.figure(HEATMAP, captions[HEATMAP], 1))
        shown.append(HEATMAP)
    if cells is not None and len(cells):
        rows = [[_cell(r.source), _cell(r.target), _num(_interval(r.gain, r.ci_low, r.ci_high, seeds, True)),
                 _num(_p(r.p_adjusted)), _verdict(r.verdict), _num(_points(r.test_set_gain, True)),
                 _num(_p(r.test_set_p_adjusted))] for r in cells.itertuples()]
        parts += ["<h3>Sequential transfer from each source to each target, against its matched control</h3>",
                  _table(["source", "target", "gain, points [simultaneous interval]", "p (adjusted)", "verdict",
                          "gain over test examples", "p (adjusted)"], rows,
                         [f" data-system='{_text(f'{r.source}->{r.target}')}' data-verdict='{_text(r.verdict)}'"
                          for r in cells.itertuples()], name="verdicts")]
    if families is not None and len(families):
        rows = [[_cell(r.system), _cell(r.target), *_comparison_cells(r)] for r in families.itertuples()]
        parts += ["<h3>Fusion over all sources on each target, against its matched control</h3>",
                  _table(["system", "target", "gain, points [simultaneous interval]", "p (adjusted)", "verdict"], rows,
                         name="families")]
    if selection is not None and len(selection):
        measures = [c for c in selection.columns if c not in ("estimator", "n_targets", "verdict")]
        rows = [[_cell(r["estimator"]), *[_num(_p(r[c]) if c.startswith("p_") else f"{r[c]:.2f}") for c in measures],
                 _cell(r["verdict"])] for r in selection.to_dict("records")]
        parts += ["<h3>Picking the source before training: each estimator's ranking against the observed gains</h3>",
                  _table(["estimator", *measures, "verdict"], rows, name="selection")]
    parts.append(f"<p class='note'>The sentences: {page.link('verdicts.json')}.</p>")
    return "".join(parts), shown


# ---------------------------------------------------------------- the page

def _in_short(verdicts: dict) -> str:
    """The answers in words (a summary section) and the notes, without the verdict rule (stated with the table)."""
    lines = [s for section in verdicts.get("sections", []) if section["title"] == SUMMARY_SECTION
             for s in section["sentences"]]
    lines += [note for note in verdicts.get("notes", []) if not note.startswith(RULE_NOTE)]
    return f"<h2>In short</h2><ul>{''.join(f'<li>{_text(line)}</li>' for line in lines)}</ul>" if lines else ""


def _advice(verdicts: dict) -> str:
    """The advice section (``findings.advice``): what to use, at what cost, and what to try next."""
    section = next((s for s in verdicts.get("sections", []) if s["title"] == ADVICE_SECTION), None)
    if section is None or not section["sentences"]:
        return ""
    return (f"<h2>Advice</h2><p class='note'>{_text(section['methods'])}</p><ul>"
            + "".join(f"<li>{_text(line)}</li>" for line in section["sentences"]) + "</ul>")


def _key_values(rows: dict) -> str:
    cells = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in rows.items())
    return f"<div class='scroll'><table class='provenance'>{cells}</table></div>"


def _happened(record: dict) -> str:
    """What happened during the run that made the report: every fusionkit warning its notebooks raised (a damaged
    record moved aside and rebuilt, a parameter adjusted, a source an arm could not use), each once."""
    if "warnings" not in record:  # a report made before fusionkit recorded them
        return ""
    if not record["warnings"]:
        return "<h2>What happened during this run</h2><p>Nothing unusual: no fusionkit warning was raised.</p>"
    items = "".join(f"<li>{_text(item['text'])} <span class='note'>({_text(item['notebook'])})</span></li>"
                    for item in record["warnings"])
    return (f"<h2>What happened during this run</h2><p>fusionkit warned {len(record['warnings'])} time(s) while the "
            f"notebooks ran:</p><ul>{items}</ul>")


def _provenance(record: dict) -> str:
    flat = {k: v for k, v in record.items() if not isinstance(v, dict) and k != "warnings"}
    return ("<h2>Provenance</h2>" + _key_values(flat) + "<h3>Package versions</h3>"
            + _key_values(record.get("versions", {})) + "<h3>Notebook times (s)</h3>"
            + _key_values(record.get("notebook_seconds", {}))
            + "<details><summary>Parameters</summary>"
              f"<pre>{_text(json.dumps(record.get('parameters', {}), indent=1))}</pre></details>")


def _files(page: _Page, notebooks: list[Path]) -> str:
    tables = [*LINKED_TABLES, *sorted(path.name for path in page.out.glob("comparisons_*.csv")), "verdicts.json"]
    present = [name for name in tables if (page.out / name).is_file()]
    if page.embed:
        return (f"<h2>Notebooks and tables</h2><p class='note'>This single file leaves out what the report folder "
                f"<code>{_text(page.out.name)}/</code> holds beside it: the executed notebooks "
                f"({_text(', '.join(n.stem for n in notebooks))}), the figures as SVG, and the tables in full "
                f"precision ({_text(', '.join(present))}).</p>")
    items = [f"<li><a href='notebooks/{_text(n.stem)}.html'>{_text(n.stem)}</a> "
             f"(<a href='notebooks/{_text(n.name)}'>ipynb</a>)</li>" for n in notebooks
             if (page.out / "notebooks" / f"{n.stem}.html").is_file()]
    items += [f"<li>{page.link(name)}</li>" for name in present]
    return f"<h2>Notebooks and tables</h2><ul>{''.join(items)}</ul>"


def protocol_notice(record: dict) -> str:
    """A warning at the top of a page made under an older protocol (``study.design.PROTOCOL_VERSION``): its runs are
    not the ones today's code plans, so regenerating it reruns them."""
    from fusionkit.study.design import PROTOCOL_VERSION

    made = record.get("protocol_version", 1)
    if made == PROTOCOL_VERSION:
        return ""
    return (f"<p class='stale'><strong>Made under protocol version {_text(made)}</strong>; this code plans version "
            f"{PROTOCOL_VERSION} (what changed: <code>fusionkit.study.design.PROTOCOL_VERSION</code>). Its numbers are "
            f"what that protocol measured; regenerating the report (<code>make report</code>, <code>make "
            f"matrix</code>) reruns the study under today's.</p>")


def _meta(record: dict) -> str:
    """One line of what the study was: profile, encoder, seeds, size, commit, date (those the record has)."""
    study = record.get("parameters", {}).get("study_parameters", {})
    facts = {"profile": record.get("profile"), "encoder": study.get("encoder"), "seeds": study.get("seeds"),
             "n=": study.get("fusion_size"), "commit": str(record.get("git_commit", ""))[:12] or None,
             "": str(record.get("date", ""))[:10] or None}
    shown = [f"{name}{value}" if name.endswith("=") or not name else f"{name} {value}"
             for name, value in facts.items() if value is not None]
    return f"<p class='meta'>{_text(' · '.join(shown))}</p>"


def render(out: Path, notebooks: list[Path], record: dict, embed: bool = False) -> tuple[str, pd.DataFrame | None]:
    """The page of the report folder ``out`` as HTML, and its headline table (None without results)."""
    page = _Page(Path(out), embed)
    verdicts_path, manifest = page.out / "verdicts.json", page.out / "figures" / "figures.json"
    verdicts = json.loads(verdicts_path.read_text()) if verdicts_path.is_file() else {}
    captions = json.loads(manifest.read_text()) if manifest.is_file() else {}
    matrix = "targets" in record.get("parameters", {})
    headline, table = _matrix_headline(page, record) if matrix else _target_headline(page, record)
    body, shown = _matrix_verdicts(page, record, captions) if matrix else _target_verdicts(page, record, verdicts,
                                                                                          captions)
    rest = [name for name in sorted(captions) if name not in shown]
    figures = "".join(page.figure(name, captions[name], number)
                      for number, name in enumerate(rest, start=len(shown) + 1))
    title = verdicts.get("question", page.out.name)
    parts = [f"<h1>fusionkit report: {_text(title)}</h1>", _meta(record), protocol_notice(record), headline, _in_short(verdicts),
             _advice(verdicts), body,
             "<h2>Figures</h2>", figures or "<p>No figures were saved.</p>", _files(page, notebooks),
             _happened(record), _provenance(record)]
    document = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>fusionkit report: {_text(page.out.name)}</title><style>{STYLE}</style></head>"
                f"<body>{''.join(parts)}</body></html>")
    return document, table


def write_index(out: Path, notebooks: list[Path], record: dict) -> Path:
    """index.html (and headline.csv, the headline in full precision) in the report folder ``out``."""
    out = Path(out)
    document, headline = render(out, notebooks, record)
    if headline is not None:
        atomic_write(out / HEADLINE, headline.to_csv(index=False))
    return atomic_write(out / "index.html", document)


def _folder_record(out: Path) -> tuple[list[Path], dict]:
    """A written report's executed notebooks and provenance record, read from its folder."""
    provenance = out / "provenance.json"
    if not provenance.is_file():
        raise ConfigError(f"{out} is not a report folder: it has no provenance.json")
    return sorted((out / "notebooks").glob("[0-9][0-9]_*.ipynb")), json.loads(provenance.read_text())


def rewrite_index(out: str | Path) -> Path:
    """Write a finished report's index.html again from its folder (its CSVs, figures and provenance), without
    running anything."""
    out = Path(out)
    return write_index(out, *_folder_record(out))


def write_single_file(out: str | Path, path: str | Path | None = None) -> Path:
    """The report's page as one self-contained HTML file (images embedded, style inline, no links into the
    folder) that can be mailed; by default ``<out>/<folder name>.html``."""
    out = Path(out)
    document, _ = render(out, *_folder_record(out), embed=True)
    return atomic_write(Path(path) if path else out / f"{out.resolve().name}.html", document)


# ---------------------------------------------------------------- the page in a browser

def find_chromium() -> str | None:
    """The Chromium to drive: FUSIONKIT_CHROMIUM, else the system's (Debian's ``chromium``), else None
    (Playwright's own download, where one was made)."""
    given = os.environ.get("FUSIONKIT_CHROMIUM")
    if given:
        return given
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def launch_chromium(playwright):
    """A headless Chromium from a running ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=find_chromium())


def screenshot(page_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 900) -> Path:
    """A PNG of the top of a page (``width`` x ``height``, the browser's window), e.g. a report's preview."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ConfigError("a screenshot needs playwright (pip install playwright; in fusionkit's dev extra) and a "
                          "Chromium (apt-get install chromium)") from None
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            window = browser.new_page(viewport={"width": width, "height": height})
            window.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            window.screenshot(path=str(png_path))
        finally:
            browser.close()
    return Path(png_path)
