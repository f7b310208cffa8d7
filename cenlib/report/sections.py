"""The report's sections: each turns its statistics into a figure and a table of the numbers
behind it (see :mod:`.page` for the ``data-stat`` names)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from cenlib.classes import CLASSES
from cenlib.report import figures, maps
from cenlib.report.basemap import SOURCE
from cenlib.report.inputs import RunInputs
from cenlib.report.page import Cell, Section, card, class_cell, figure, num, para, pct, table
from cenlib.report.stats import (
    ALL,
    ClassDistribution,
    Mentions,
    Review,
    StageCost,
    Verification,
    split_counts,
)
from cenlib.report.text import TextStats

NONE = Cell("-", numeric=True)  # a number that does not apply


def overview(run: RunInputs, text: TextStats, v: Verification | None) -> Section:
    counts = split_counts(run.table)
    cards = [card(num(counts[ALL], "patches-all"), "exported patches")]
    cards += [card(num(n, f"patches-{g}"), g) for g, n in counts.items() if g != ALL]
    cards.append(card(num(text.vocabulary, "vocabulary"), "distinct words"))
    cards.append(card(num(text.mean("words"), "words-mean", 1), "words per caption"))
    if v is not None:
        cards.append(card(pct(v.rate("final"), "pass-rate-final"), "captions passing"))
    t = run.table
    facts = [
        ("models", ", ".join(sorted(set(t["model"].astype(str))))),
        ("prompt styles", ", ".join(sorted(set(t["style"].astype(str))))),
        ("grid", ", ".join(sorted(set(t["grid"].astype(str))))),
        ("acquired", f"{min(t['datetime'])} to {max(t['datetime'])}"),
        ("export", str(run.export_root)),
    ]
    body = f'<div class="cards">{"".join(cards)}</div>' + table(None, facts, "facts")
    return Section("overview", "Overview", body)


def sample_map(run: RunInputs) -> Section:
    fig = maps.sample_map(run.table, run.export_root)
    n_areas = len(maps.areas(maps.bboxes(run.table)))
    body = figure(figures.png_data_url(fig), "map of the exported patches") + para(
        f"{len(run.table)} patches in {n_areas} areas. Zoomed panels draw each patch's own RGB "
        f"image inside its footprint, outlined in its split's colour. Map data: {SOURCE}."
    )
    return Section("map", "Where the samples are", body)


def land_cover(dist: ClassDistribution) -> Section:
    fig = figures.land_cover(dist)
    gs = dist.nonempty
    header = ["class", *(f"share {g}" for g in gs), *(f"presence {g}" for g in gs)]
    rows = []
    for c in figures.shown_classes(dist):
        name = CLASSES[c].name.replace(" ", "-")
        rows.append(
            [
                class_cell(c),
                *(pct(float(dist.share[g][c]), f"share-{g}-{name}") for g in gs),
                *(pct(float(dist.presence[g][c]), f"presence-{g}-{name}") for g in gs),
            ]
        )
    body = (
        figure(figures.png_data_url(fig), "land-cover distribution per split")
        + para(
            "Share: the class's part of all pixels of the split's patches (ESA WorldCover "
            "mapped to ChatEarthNet's classes). Presence: the part of the split's patches that "
            "have at least one pixel of the class."
        )
        + table(header, rows, "land-cover-table")
    )
    return Section("land-cover", "Land cover per split", body)


def captions(run: RunInputs, text: TextStats) -> Section:
    fig = figures.caption_lengths(text)
    split = run.table["split"].astype(str).to_numpy()
    rows = []
    for g in split_counts(run.table):
        sel = np.ones(len(split), bool) if g == ALL else split == g
        w, k = text.words[sel], text.tokens[sel]
        if not len(w):
            continue
        rows.append(
            [
                g,
                num(int(sel.sum())),
                num(float(w.mean()), f"words-mean-{g}", 1),
                num(float(np.median(w)), "", 0),
                f"{int(w.min())}-{int(w.max())}",
                num(float(k.mean()), f"tokens-mean-{g}", 1),
                f"{int(k.min())}-{int(k.max())}",
                num(int(k.sum()), f"tokens-total-{g}"),
            ]
        )
    header = [
        "split",
        "captions",
        "words mean",
        "median",
        "range",
        "tokens mean",
        "range",
        "tokens",
    ]
    frequent = "".join(f"<li>{html.escape(w)} ({n})</li>" for w, n in text.frequent)
    vocabulary = Cell(f"{text.vocabulary:,}", "vocabulary-size", text.vocabulary)
    body = (
        figure(figures.png_data_url(fig), "caption lengths and frequent words")
        + table(header, rows, "caption-table")
        + f"<p>Vocabulary: <b>{vocabulary.render('span')}</b> distinct words. "
        "Most frequent words (function words left out):</p>"
        + f'<ol class="words">{frequent}</ol>'
        + para(
            "Words: runs of letters, lower cased. Tokens: cl100k_base (the gpt-3.5 / gpt-4 "
            "tokenizer), counted offline."
        )
    )
    return Section("captions", "Captions: length and vocabulary", body)


def mentions(m: Mentions) -> Section:
    classes = [c.index for c in CLASSES if c.index > 0]
    fig = figures.mentions_vs_presence(m, classes)
    rows = []
    for c in classes:
        name = CLASSES[c].name.replace(" ", "-")
        present, said = int(m.present[c]), int(m.mentioned[c])
        recall = m.mentioned_present[c] / present if present else float("nan")
        rows.append(
            [
                class_cell(c),
                num(present, f"present-{name}"),
                num(said, f"mentioned-{name}"),
                pct(float(recall), f"recall-{name}") if present else NONE,
                num(int(m.mentioned_absent[c]), f"mentioned-absent-{name}"),
                num(int(m.negated[c]), f"negated-{name}"),
            ]
        )
    header = [
        "class",
        "patches with it",
        "captions mentioning it",
        "mentioned where present",
        "mentioned where absent",
        "said to be absent",
    ]
    body = (
        figure(figures.png_data_url(fig), "class mentions against presence")
        + para(
            "Mentions are found with the verify stage's lexicon (cenlib.verify.find_mentions: "
            "synonyms and plurals, negated mentions such as 'no water' counted apart) in the "
            f"{m.patches} exported captions."
        )
        + table(header, rows, "mentions-table")
    )
    return Section("mentions", "Classes mentioned against classes present", body)


def verification(v: Verification | None) -> Section:
    if v is None:
        return Section(
            "verification",
            "Verification",
            para("No verdicts (verify.parquet) in this run: run `cen verify CONFIG`."),
        )
    fig = figures.verification(v)
    status = [[s, num(n, f"status-{s}"), pct(n / max(v.captions, 1))] for s, n in v.status.items()]
    rates = [
        ["first captions passing", pct(v.rate("first"), "pass-rate-first")],
        ["passing after repair", pct(v.rate("final"), "pass-rate-final-table")],
    ]
    types = [
        [t, num(v.first[t], f"violations-first-{t}"), num(v.final[t], f"violations-final-{t}")]
        for t in v.first
    ]
    rounds = ", ".join(f"round {r}: {n}" for r, n in v.rounds.items()) or "none"
    body = (
        figure(figures.png_data_url(fig), "verification outcomes and violations")
        + '<div class="row">'
        + table(["status", "captions", "share"], status, "status-table")
        + table(["rate", ""], rates, "rates-table")
        + table(["violation", "first captions", "final captions"], types, "violations-table")
        + "</div>"
        + para(
            f"All {v.captions} verified captions, exported or not. A caption counts once per "
            f"violation type it has. Repairs that passed, by round: {rounds}."
        )
    )
    return Section("verification", "Verification", body)


def review(r: Review) -> Section:
    exported = table(
        ["review of exported patches", "patches"],
        [[k, num(n, f"exported-review-{k.replace(' ', '-')}")] for k, n in r.exported.items()],
        "exported-review-table",
    )
    if not r.decisions:
        body = para("No review decisions (no review.sqlite): `cen review RUN_DIR` adds them.")
        return Section("review", "Human review", body + exported)
    fig = figures.review(r)
    rows = [[k, num(n, f"review-{k}")] for k, n in r.latest.items()]
    rows += [
        ["stale (caption changed since)", num(r.stale, "review-stale")],
        ["decisions in all", num(r.decisions, "review-decisions")],
    ]
    body = (
        '<div class="row">'
        + figure(figures.png_data_url(fig), "review outcomes", width=550)
        + table(["latest decision", "patches"], rows, "review-table")
        + exported
        + "</div>"
        + para(f"Reviewers: {', '.join(r.reviewers)}.")
    )
    return Section("review", "Human review", body)


def stages(rows: list[StageCost], total: float | None) -> Section:
    if not rows:
        return Section(
            "stages",
            "Time and cost per stage",
            para("No summary.json in this run (the job writes it): nothing to show."),
        )
    cells = [
        [
            r.stage,
            num(r.seconds, f"seconds-{r.stage}", 2) if r.seconds is not None else NONE,
            num(r.cost, f"cost-{r.stage}", 4) if r.cost is not None else NONE,
            r.detail,
        ]
        for r in rows
    ]
    if total is not None:
        cells.append(
            [
                "whole command",
                num(total, "seconds-total", 2),
                "",
                "with the sources and the cluster",
            ]
        )
    body = (
        '<div class="row">'
        + table(["stage", "seconds", "cost (USD)", "what it did"], cells, "stages-table")
        + figure(figures.png_data_url(figures.stage_times(rows)), "wall time per stage", 550)
        + "</div>"
        + para(
            "From summary.json: the latest record of each stage, kept from earlier `cen` "
            "commands until a stage before it runs again; costs are what the stage's command "
            "spent (captions, repair requests)."
        )
    )
    return Section("stages", "Time and cost per stage", body)


def frame(table_: pd.DataFrame) -> str:
    """The lead sentence under the title."""
    return (
        f"{len(table_)} image-text pairs: Sentinel-2 patches captioned from their ESA WorldCover "
        "land-cover statistics, verified against them and reviewed."
    )
