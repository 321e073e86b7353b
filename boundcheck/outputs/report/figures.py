"""Report figures (matplotlib; PDF for LaTeX, PNG for Markdown), drawn only where a picture
says more than the tables:

* the Hessian spectrum with every measured bound on λ_max / λ_min (one subject);
* loss surfaces along random and extreme-curvature directions (1-D and 2-D; T9);
* slack across a sweep or across subjects (one panel per theorem of a family);
* slack against training step (runs of one series at several checkpoints);
* λ_max against training step beside 2/η, per GD step size η (runs that measured
  ``hessian.lambda_max`` and ``gd.step_size``: T10, progressive sharpening);
* sharpness against compression measures across runs, with Pearson and Spearman
  correlations (``scipy.stats``; the numbers go into the report as well).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boundcheck.outputs.report.model import EIGENVALUE_QUANTITIES, Run, TheoremEntry
from boundcheck.outputs.report.numbers import finite_number as finite
from boundcheck.outputs.report.text import mathtext

PANELS_PER_FIGURE = 6
MAX_SPECTRUM_FIGURES = 4
MAX_LEGEND_SERIES = 10
VERDICT_COLOURS = {"HOLDS": "#1b7837", "VIOLATED": "#c51b7d", "INCONCLUSIVE": "#e08214",
                   "NOT_APPLICABLE": "#878787"}
_RC = {"font.size": 8.5, "axes.titlesize": 8.5, "axes.labelsize": 8.5, "legend.fontsize": 7.5,
       "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "axes.spines.top": False,
       "axes.spines.right": False, "pdf.fonttype": 42, "svg.hashsalt": "boundcheck"}


# Default axes of the sharpness-vs-compression scatter (``pairs`` chooses others).
SHARPNESS = ("hessian.lambda_max", "hessian.trace", "ggn.trace")
COMPRESSION_LEAVES = ("mls", "nmls", "log_lvr", "lvr", "nvr", "local_dim", "local_dimension",
                      "fro2_mean")  # jacobian.fro2_mean: T11a's ansatz (mean ‖J_x‖_F²)
MAX_DEFAULT_SHARPNESS, MAX_DEFAULT_COMPRESSION = 2, 6


@dataclass
class Correlation:
    """Pearson and Spearman correlation of two quantities across runs."""

    x: str
    y: str
    n: int
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float


@dataclass
class Figure:
    """One figure: file stem, a caption (prose with inline math, `identifiers`), its files."""

    name: str
    caption: str
    files: dict[str, Path] = field(default_factory=dict)
    correlations: list[Correlation] = field(default_factory=list)


def make_figures(runs: Sequence[Run], entries: Sequence[TheoremEntry], out_dir: str | Path,
                 formats: Sequence[str] = ("pdf", "png"),
                 pairs: Sequence[tuple[str, str]] | None = None) -> list[Figure]:
    """Draw every figure the runs support into ``out_dir``; returns them in report order."""
    import matplotlib

    out = Path(out_dir)
    figures: list[Figure] = []
    with matplotlib.rc_context(_RC):
        for run in _spectrum_runs(runs, entries):
            figures.append(_spectrum_figure(run, entries, out, formats))
        for run in _surface_runs(runs):
            figures.append(_surface_figure(run, out, formats))
        by_family: dict[str, list[TheoremEntry]] = {}
        for entry in entries:
            by_family.setdefault(entry.family, []).append(entry)
        for family, members in by_family.items():
            swept = [e for e in members if len(_sweep_points(e)) >= 2]
            for i in range(0, len(swept), PANELS_PER_FIGURE):
                figures.append(_sweep_figure(family, swept[i:i + PANELS_PER_FIGURE], out,
                                             formats, part=i // PANELS_PER_FIGURE))
            stepped = [e for e in members if _step_series(e)]
            for i in range(0, len(stepped), PANELS_PER_FIGURE):
                figures.append(_steps_figure(family, stepped[i:i + PANELS_PER_FIGURE], out,
                                             formats, part=i // PANELS_PER_FIGURE))
        panels = stability_panels(runs)
        keys = list(panels)
        for i in range(0, len(keys), PANELS_PER_FIGURE):
            figures.append(_stability_figure({k: panels[k] for k in keys[i:i + PANELS_PER_FIGURE]},
                                             out, formats, part=i // PANELS_PER_FIGURE))
        chosen = list(pairs) if pairs is not None else default_pairs(runs)
        usable = [(x, y) for x, y in chosen if len(_paired_values(runs, x, y)[0]) >= 3]
        for i in range(0, len(usable), PANELS_PER_FIGURE):
            figures.append(_scatter_figure(runs, usable[i:i + PANELS_PER_FIGURE], out, formats,
                                           part=i // PANELS_PER_FIGURE))
    return figures


# -- drawing helpers --------------------------------------------------------------------------
def _new_figure(panels: int, height: float = 2.3):
    from matplotlib.figure import Figure as MplFigure

    cols = 1 if panels == 1 else 2
    rows = math.ceil(panels / cols)
    fig = MplFigure(figsize=(6.3 if cols == 2 else 5.6, height * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def _save(fig, out: Path, name: str, formats: Sequence[str]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        fig.savefig(path, format=fmt, dpi=150, metadata=metadata)
        files[fmt] = path
    return files


def mpl_label(text: str) -> str:
    """Prose with inline math for a matplotlib label; the plain text where mathtext cannot
    parse the math (a figure must never fail over a title)."""
    from matplotlib.mathtext import MathTextParser

    rich = mathtext(text)
    try:
        MathTextParser("path").parse(rich)
    except ValueError:
        return text.replace("$", r"\$")
    return rich


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "x"


def _short_title(entry: TheoremEntry, width: int = 48) -> str:
    """The title for a panel: its prose part when it reads "prose: formula", shortened."""
    title = entry.title.split(": ", 1)[0] if ": " in entry.title else entry.title
    return title if len(title) <= width else title[:width - 1].rstrip() + "…"


def _slack_axis_label(kind: str) -> str:
    return "slack rhs/lhs" if kind == "ratio" else "slack rhs − lhs"


def _slack_values(r: dict[str, Any]) -> tuple[float, float, float] | None:
    sl = r.get("slack")
    if not sl or not all(finite(sl[k]) for k in ("value", "lower", "upper")):
        return None
    return float(sl["value"]), float(sl["lower"]), float(sl["upper"])


def _reference_line(ax, kind: str) -> None:
    ax.axhline(1.0 if kind == "ratio" else 0.0, color="0.4", lw=0.8, ls=":")


def _figure_legend(fig, axes) -> None:
    """One legend below all panels, merging the panels' labelled series (at most
    ``MAX_LEGEND_SERIES``; with more, colours are left unexplained rather than crowded)."""
    merged: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            merged.setdefault(text, handle)
    labels, handles = list(merged), list(merged.values())
    if handles and len(handles) <= MAX_LEGEND_SERIES:
        # about 100 legend characters fit across the figure
        ncol = max(1, min(3, len(labels), 100 // (max(map(len, labels)) + 6)))
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def _sweep_ticks(ax, values: list[float]) -> None:
    """Ticks at the swept values themselves, log-spaced when they span a decade."""
    distinct = sorted(set(values))
    if min(distinct) > 0 and max(distinct) / min(distinct) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(distinct, [f"{v:g}" for v in distinct])
    ax.minorticks_off()


def _scale_y(ax, kind: str, values: list[float]) -> None:
    if kind == "ratio" and values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")


# -- spectrum -----------------------------------------------------------------------------
def _eigen_bounds(run: Run, entries: Sequence[TheoremEntry]) -> list[tuple[TheoremEntry, str,
                                                                           float, str]]:
    """(theorem, bounded quantity, bound value, verdict) for this run's eigenvalue bounds."""
    found = []
    for entry in entries:
        bounded = entry.bounded_eigenvalue()
        r = run.result(entry.id)
        if bounded is None or r is None:
            continue
        quantity, direction = bounded
        side = r.get("rhs") if direction == "upper" else r.get("lhs")
        if side and finite(side["value"]):
            found.append((entry, quantity, float(side["value"]), r["verdict"]))
    return found


def _spectrum_runs(runs: Sequence[Run], entries: Sequence[TheoremEntry]) -> list[Run]:
    with_spectrum = [r for r in runs if r.spectrum]
    chosen = with_spectrum or [r for r in runs if _eigen_bounds(r, entries)]
    return chosen[:MAX_SPECTRUM_FIGURES] if len(runs) <= MAX_SPECTRUM_FIGURES else chosen[-1:]


# A bound further than this many spectrum widths from the spectrum is drawn at the axis edge.
FAR_BOUND = 3.0


def _spectrum_figure(run: Run, entries: Sequence[TheoremEntry], out: Path,
                     formats: Sequence[str]) -> Figure:
    """Histogram of the spectrum (when stored) above a ladder: per extreme eigenvalue, its
    measured value and the value of every bound on it."""
    from matplotlib.figure import Figure as MplFigure

    spectrum = run.spectrum
    measured = run.quantities()
    bounds = _eigen_bounds(run, entries)
    rows = [q for q in EIGENVALUE_QUANTITIES
            if (q in measured and finite(measured[q]["value"])) or any(b[1] == q for b in bounds)]
    ladder_height = 0.35 * len(rows) + 0.5
    fig = MplFigure(figsize=(5.6, ladder_height + (1.9 if spectrum else 0) + 0.3
                             + 0.2 * math.ceil((len(bounds) + 1) / 2)),
                    layout="constrained")
    if spectrum:
        hist_ax, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1.9, ladder_height])
        hist_ax.hist(spectrum, bins=min(80, max(10, len(spectrum) // 20)), color="0.75",
                     edgecolor="0.55", linewidth=0.3, log=True)
        hist_ax.set_ylabel("count")
        hist_ax.set_title(f"{len(spectrum)} eigenvalues")
    else:
        ax = fig.subplots(1, 1)
    # the axis shows the spectrum and the measured eigenvalues, widened to take in bounds up
    # to FAR_BOUND spans away; a bound beyond that sits at the edge with its value written
    core = list(spectrum or []) + [float(measured[q]["value"]) for q in rows
                                   if q in measured and finite(measured[q]["value"])]
    every = core + [b[2] for b in bounds]
    lo_x, hi_x = (min(every), max(every)) if every else (0.0, 1.0)
    if core:
        span = (max(core) - min(core)) or abs(max(core)) or 1.0
        lo_x = max(lo_x, min(core) - FAR_BOUND * span)
        hi_x = min(hi_x, max(core) + FAR_BOUND * span)
    pad = 0.05 * (hi_x - lo_x or abs(hi_x) or 1.0)
    far_lo, far_hi = any(b[2] < lo_x for b in bounds), any(b[2] > hi_x for b in bounds)
    # off-scale bounds sit in a strip beyond a dotted line at each edge
    ax.set_xlim(lo_x - pad * (4 if far_lo else 1), hi_x + pad * (4 if far_hi else 1))
    for far, edge in ((far_lo, lo_x - 1.5 * pad), (far_hi, hi_x + 1.5 * pad)):
        if far:
            ax.axvline(edge, color="0.6", lw=0.6, ls=":")

    def clip(v: float) -> float:
        return lo_x - 3 * pad if v < lo_x else hi_x + 3 * pad if v > hi_x else v

    for y, q in enumerate(reversed(rows)):
        ends = [clip(b[2]) for b in bounds if b[1] == q]
        if q in measured and finite(measured[q]["value"]):
            ends.append(float(measured[q]["value"]))
        ax.plot([min(ends), max(ends)], [y, y], color="0.85", lw=5, solid_capstyle="butt",
                zorder=1)
    placed: dict[str, list[float]] = {}
    for i, (entry, q, value, verdict) in enumerate(bounds):
        shown = clip(value)
        # markers that would hide one another (equal values: the closed-form WS bound is the
        # WS bound) are stacked: up, down, further up, ...
        near = sum(abs(shown - v) <= 0.01 * (hi_x - lo_x or 1.0) for v in placed.get(q, []))
        placed.setdefault(q, []).append(shown)
        y = list(reversed(rows)).index(q) + (0.2 * ((near + 1) // 2) * (-1) ** (near + 1)
                                              if near else 0.0)
        direction = entry.bounded_eigenvalue()[1]
        ax.plot([shown], [y], ls="none", marker=4 if direction == "upper" else 5, ms=9,
                color=f"C{i % 10}", markeredgecolor=VERDICT_COLOURS[verdict]
                if verdict != "HOLDS" else f"C{i % 10}", zorder=3,
                label=entry.id + ("" if verdict == "HOLDS" else f" ({verdict})"))
        if shown != value:  # off the scale: say where it is
            right = shown > hi_x
            ax.annotate(f"{value:.3g}", (shown, y), xytext=(-7 if right else 7, 0),
                        textcoords="offset points", fontsize=6.5, color=f"C{i % 10}",
                        ha="right" if right else "left", va="center")
    for y, q in enumerate(reversed(rows)):
        if q in measured and finite(measured[q]["value"]):
            ax.plot([float(measured[q]["value"])], [y], ls="none", marker="D", ms=4,
                    color="black", zorder=4, label="measured" if y == 0 else None)
    ax.set_yticks(range(len(rows)), [mpl_label(EIGENVALUE_QUANTITIES[q])
                                     for q in reversed(rows)])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("eigenvalue of the loss Hessian")
    _figure_legend(fig, [ax])
    name = f"spectrum-{_slug(run.label)}"
    caption = (("Histogram of the loss-Hessian eigenvalues (log count) of " if spectrum
                else "Extreme eigenvalues of the loss Hessian of ") + f"{run.label}: the "
               "measured λ_min and λ_max (black diamonds) and the value of each bound on them "
               "(left-pointing: upper bound; right-pointing: lower bound; markers at equal "
               "values are stacked vertically; a bound far off the scale sits beyond the dotted "
               "line, labelled with its value); the grey bar spans them.")
    return Figure(name, caption, _save(fig, out, name, formats))


# -- loss surfaces (T9) ---------------------------------------------------------------------
def _surface_runs(runs: Sequence[Run]) -> list[Run]:
    chosen = [r for r in runs if r.loss_surfaces]
    return chosen[:MAX_SPECTRUM_FIGURES] if len(chosen) <= MAX_SPECTRUM_FIGURES else chosen[-1:]


def _surface_figure(run: Run, out: Path, formats: Sequence[str]) -> Figure:
    """1-D loss curves along a random direction and the λ_max / λ_min eigenvectors, and
    contours over the random plane and the plane of the two eigenvectors."""
    from matplotlib.figure import Figure as MplFigure

    surfaces = run.loss_surfaces
    planes = surfaces["planes"]
    fig = MplFigure(figsize=(6.3, 2.9), layout="constrained")
    axes = fig.subplots(1, 1 + len(planes), squeeze=False).ravel()
    line_ax = axes[0]
    for i, line in enumerate(surfaces["lines"]):
        label = line["direction"]
        if "curvature" in line:
            label += f" (λ = {line['curvature']:.3g})"
        line_ax.plot(line["t"], line["loss"], color=f"C{i}", lw=1.2, label=mpl_label(label))
    line_ax.set_xlabel("step t along the unit direction")
    line_ax.set_ylabel("loss")
    line_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False,
                   fontsize=6.5)
    for ax, plane in zip(axes[1:], planes, strict=True):
        t = plane["t"]
        contour = ax.contourf(t, t, plane["loss"], levels=14, cmap="viridis")
        ax.plot([0], [0], marker="+", color="white", ms=7)
        ax.set_xlabel(mpl_label(plane["directions"][0]))
        ax.set_ylabel(mpl_label(plane["directions"][1]))
        fig.colorbar(contour, ax=ax, shrink=0.8)
    name = f"surfaces-{_slug(run.label)}"
    measured = run.quantities()
    saddle = ""
    if "projection.saddle_probability" in measured:
        obs = measured["projection.saddle_probability"]
        saddle = (f" A random Gaussian plane showed a saddle (det < 0 of the projected "
                  f"Hessian) with frequency {obs['value']:.3g} "
                  f"[{obs['lower']:.3g}, {obs['upper']:.3g}]")
        pred = measured.get("projection.saddle_probability_predicted")
        if pred:
            saddle += (f"; predicted from the spectrum alone {pred['value']:.3g} "
                       f"[{pred['lower']:.3g}, {pred['upper']:.3g}]")
        saddle += "."
    caption = (f"Loss of {run.label} along a random direction and the λ_max and λ_min "
               f"eigenvectors of its Hessian (left; step t up to {surfaces['radius']:.3g}), "
               "and over the plane of two random Gaussian directions and the plane of the two "
               "eigenvectors (contours; + marks the trained parameters)." + saddle)
    return Figure(name, caption, _save(fig, out, name, formats))


# -- slack across a sweep -------------------------------------------------------------------
def _latest_per_series(entry: TheoremEntry) -> dict[str, tuple[Run, dict[str, Any]]]:
    latest: dict[str, tuple[Run, dict[str, Any]]] = {}
    for run, r in entry.rows:
        prev = latest.get(run.series)
        if prev is None or (run.step or 0) >= (prev[0].step or 0):
            latest[run.series] = (run, r)
    return latest


def _sweep_points(entry: TheoremEntry) -> dict[str, tuple[Run, dict[str, Any]]]:
    return {s: rr for s, rr in _latest_per_series(entry).items() if _slack_values(rr[1])}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sweep_axes(runs: list[Run]) -> tuple[str | None, str | None]:
    """(x, colour) parameters: x the numeric swept parameter with the most values; colour
    another varying parameter with 2–10 values: non-numeric first (the model), then the one
    set in most runs, then the fewest values. (None, None) when nothing numeric varies."""
    keys = sorted({k for run in runs for k in run.sweep})
    values = {k: {repr(run.sweep.get(k)) for run in runs if run.sweep.get(k) is not None}
              for k in keys}
    varying = [k for k in keys if len(values[k]) > 1]
    numeric = [k for k in varying if all(_is_number(run.sweep[k]) for run in runs
                                         if run.sweep.get(k) is not None)]
    if not numeric:
        return None, None
    x = max(numeric, key=lambda k: len(values[k]))
    coverage = {k: sum(run.sweep.get(k) is not None for run in runs) for k in varying}
    others = sorted((k for k in varying if k != x and len(values[k]) <= MAX_LEGEND_SERIES),
                    key=lambda k: (k in numeric, -coverage[k], len(values[k])))
    return x, (others[0] if others else None)


def _sweep_figure(family: str, members: list[TheoremEntry], out: Path,
                  formats: Sequence[str], part: int) -> Figure:
    fig, axes = _new_figure(len(members))
    figure_runs = [run for e in members for run, _ in _sweep_points(e).values()]
    x_key, group_key = _sweep_axes(figure_runs)
    group_names = sorted({f"{group_key}={_short_value(run.sweep.get(group_key))}"
                          for run in figure_runs}) if group_key else [""]
    for ax, entry in zip(axes, members, strict=True):
        points = list(_sweep_points(entry).values())
        runs = [run for run, _ in points]
        kind = points[0][1]["slack"]["kind"]
        groups: dict[str, list[tuple[Any, Run, dict]]] = {}
        for i, (run, r) in enumerate(points):
            x = run.sweep.get(x_key) if x_key else i
            if x is None:
                continue
            group = f"{group_key}={_short_value(run.sweep.get(group_key))}" if group_key else ""
            groups.setdefault(group, []).append((x, run, r))
        values = []
        for group, items in sorted(groups.items()):
            g = group_names.index(group)
            items.sort(key=lambda t: t[0])
            xs = [t[0] for t in items]
            v = [_slack_values(t[2]) for t in items]
            ys = [s[0] for s in v]
            values += ys
            # a line only when it joins one point per x (other parameters vary too otherwise)
            joined = x_key is not None and len(set(xs)) == len(xs)
            ax.errorbar(xs, ys, yerr=[[s[0] - s[1] for s in v], [s[2] - s[0] for s in v]],
                        color=f"C{g % 10}", lw=0.9, capsize=2, marker="o", ms=3,
                        ls="-" if joined else "none", label=group or None)
            for x, y, t in zip(xs, ys, items, strict=True):
                if t[2]["verdict"] != "HOLDS":
                    ax.plot([x], [y], marker="x", ms=7, color=VERDICT_COLOURS[t[2]["verdict"]])
        _reference_line(ax, kind)
        _scale_y(ax, kind, values)
        if x_key:
            ax.set_xlabel(x_key)
            _sweep_ticks(ax, [t[0] for items in groups.values() for t in items])
        elif len(points) <= MAX_LEGEND_SERIES:
            ax.set_xticks(range(len(points)), [_shorten(run.series, 24) for run in runs],
                          rotation=30, ha="right")
        else:
            ax.set_xlabel("sweep point (see the tables)")
        ax.set_ylabel(_slack_axis_label(kind))
        ax.set_title(mpl_label(_short_title(entry)))
    _figure_legend(fig, axes)
    name = f"slack-sweep-{_slug(family)}" + (f"-{part + 1}" if part else "")
    caption = (f"Slack of the `{family}` bounds across subjects and sweep points (the last "
               "checkpoint of each), with its interval; × marks a verdict other than HOLDS, "
               "the dotted line a bound attained with equality.")
    return Figure(name, caption, _save(fig, out, name, formats))


def _short_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# -- slack against training step ----------------------------------------------------------
def _step_series(entry: TheoremEntry) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for run, r in entry.rows:
        if run.step is not None and _slack_values(r):
            series.setdefault(run.series, []).append((run.step, r))
    return {s: sorted(v, key=lambda t: t[0]) for s, v in series.items()
            if len({t[0] for t in v}) >= 2}


def _series_colours(members: list[TheoremEntry]) -> dict[str, tuple[str, str | None]]:
    """Series -> (colour, legend label), the same in every panel: one colour per series when
    few, else one per value of the sweep's grouping parameter (the model, say), else none."""
    runs = {run.series: run for e in members for run, _ in e.rows}
    names = sorted({n for e in members for n in _step_series(e)})
    if len(names) == 1:
        return {names[0]: ("C0", None)}
    if len(names) <= MAX_LEGEND_SERIES:
        return {n: (f"C{i}", n) for i, n in enumerate(names)}
    _, group_key = _sweep_axes(list(runs.values()))
    if group_key is None:
        return {n: (f"C{i % 10}", None) for i, n in enumerate(names)}
    groups = sorted({_short_value(runs[n].sweep.get(group_key)) for n in names})
    return {n: (f"C{groups.index(g)}", f"{group_key}={g}") for n in names
            for g in [_short_value(runs[n].sweep.get(group_key))]}


def _steps_figure(family: str, members: list[TheoremEntry], out: Path,
                  formats: Sequence[str], part: int) -> Figure:
    fig, axes = _new_figure(len(members))
    colour_of = _series_colours(members)
    for ax, entry in zip(axes, members, strict=True):
        series = _step_series(entry)
        kind = next(iter(series.values()))[0][1]["slack"]["kind"]
        values = []
        for label, items in sorted(series.items()):
            steps = [t[0] for t in items]
            v = [_slack_values(t[1]) for t in items]
            ys = [s[0] for s in v]
            values += ys
            colour, legend = colour_of[label]
            ax.plot(steps, ys, color=colour, lw=1.0, marker="o", ms=2.5, label=legend)
            ax.fill_between(steps, [s[1] for s in v], [s[2] for s in v], color=colour,
                            alpha=0.2, lw=0)
            for step, y, t in zip(steps, ys, items, strict=True):
                if t[1]["verdict"] != "HOLDS":
                    ax.plot([step], [y], marker="x", ms=7, color=VERDICT_COLOURS[t[1]["verdict"]])
        _reference_line(ax, kind)
        _scale_y(ax, kind, values)
        ax.set_xlabel("training step")
        ax.set_ylabel(_slack_axis_label(kind))
        ax.set_title(mpl_label(_short_title(entry)))
    _figure_legend(fig, axes)
    name = f"slack-steps-{_slug(family)}" + (f"-{part + 1}" if part else "")
    caption = (f"Slack of the `{family}` bounds against training step (shaded: its interval; "
               "× marks a verdict other than HOLDS; dotted: the bound attained with equality).")
    return Figure(name, caption, _save(fig, out, name, formats))


# -- λ_max against training step, beside 2/η (T10) ------------------------------------------
STEP_SIZE, LAMBDA_MAX = "gd.step_size", "hessian.lambda_max"


@dataclass
class StabilitySeries:
    """One GD run: its step size η and (step, λ_max value, lower, upper) at each checkpoint."""

    eta: float
    points: list[tuple[int, float, float, float]]

    @property
    def end_ratio(self) -> float:
        """ηλ_max/2 at the last checkpoint."""
        return self.eta * self.points[-1][1] / 2


def stability_panels(runs: Sequence[Run]) -> dict[str, dict[str, StabilitySeries]]:
    """Panel (the sweep point without its recipe: the subject) -> series label -> the
    run's λ_max along training; only series measured at two or more steps."""
    found: dict[str, dict[str, dict[int, tuple[float, float, float, float]]]] = {}
    for run in runs:
        q = run.quantities()
        if run.step is None or STEP_SIZE not in q or LAMBDA_MAX not in q:
            continue
        lam, eta = q[LAMBDA_MAX], q[STEP_SIZE]
        if not all(finite(lam[k]) for k in ("value", "lower", "upper")):
            continue
        point = {k: v for k, v in run.sweep.items() if not k.startswith("recipe.")}
        panel = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short_value(v)}"
                          for k, v in sorted(point.items())) or run.name.removesuffix(
            f" @ step {run.step}")
        found.setdefault(panel, {}).setdefault(run.series, {})[run.step] = (
            float(eta["value"]), float(lam["value"]), float(lam["lower"]), float(lam["upper"]))
    panels: dict[str, dict[str, StabilitySeries]] = {}
    for panel, series in found.items():
        kept = {label: StabilitySeries(next(iter(pts.values()))[0],
                                       [(s, *pts[s][1:]) for s in sorted(pts)])
                for label, pts in series.items() if len(pts) >= 2}
        if kept:
            panels[panel] = dict(sorted(kept.items(), key=lambda kv: kv[1].eta))
    return panels


def _stability_figure(panels: dict[str, dict[str, StabilitySeries]], out: Path,
                      formats: Sequence[str], part: int) -> Figure:
    fig, axes = _new_figure(len(panels))
    ends = []
    for ax, (panel, series) in zip(axes, panels.items(), strict=True):
        values = []
        for i, s in enumerate(series.values()):
            steps = [p[0] for p in s.points]
            colour = f"C{i % 10}"
            ax.plot(steps, [p[1] for p in s.points], color=colour, lw=1.0, marker="o", ms=2.5,
                    label=f"η = {s.eta:g}")
            ax.fill_between(steps, [p[2] for p in s.points], [p[3] for p in s.points],
                            color=colour, alpha=0.2, lw=0)
            ax.axhline(2 / s.eta, color=colour, lw=0.9, ls="--")
            values += [p[1] for p in s.points] + [2 / s.eta]
            ends.append(f"{s.end_ratio:.5f} ({panel}, η = {s.eta:g})")
        ax.plot([], [], color="0.4", lw=0.9, ls="--", label="2/η (dashed, same colour)")
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(mpl_label("λ_max of the loss Hessian"))
        ax.set_title(_shorten(panel, 48))
    _figure_legend(fig, axes)
    name = "stability-lambda-max" + (f"-{part + 1}" if part else "")
    caption = ("λ_max of the loss Hessian along full-batch gradient descent (shaded: its "
               "interval) against the linear-stability edge 2/η (dashed, same colour), per "
               "step size η: progressive sharpening drives λ_max up towards 2/η. ηλ_max/2 at "
               "the last checkpoint: " + "; ".join(ends) + ".")
    return Figure(name, caption, _save(fig, out, name, formats))


# -- sharpness against compression ----------------------------------------------------------
def default_pairs(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """Sharpness (λ_max, tr H, tr G: the first two measured) against every measured
    compression measure (MLS, NMLS, LVR, NVR, local dimension; at most six)."""
    names = {q for run in runs for q in run.quantities()}
    xs = [q for q in SHARPNESS if q in names][:MAX_DEFAULT_SHARPNESS]
    ys = sorted(q for q in names if q.rsplit(".", 1)[-1] in COMPRESSION_LEAVES)
    return [(x, y) for x in xs for y in ys[:MAX_DEFAULT_COMPRESSION]]


def _paired_values(runs: Sequence[Run], x: str, y: str
                   ) -> tuple[list[float], list[float], list[Run]]:
    xs, ys, used = [], [], []
    for run in runs:
        q = run.quantities()
        if x in q and y in q and finite(q[x]["value"]) and finite(q[y]["value"]):
            xs.append(float(q[x]["value"]))
            ys.append(float(q[y]["value"]))
            used.append(run)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return [], [], []
    return xs, ys, used


def correlation(runs: Sequence[Run], x: str, y: str) -> Correlation | None:
    """Pearson and Spearman correlation of quantities ``x`` and ``y`` over the runs."""
    from scipy import stats

    xs, ys, _ = _paired_values(runs, x, y)
    if len(xs) < 3:
        return None
    pearson = stats.pearsonr(xs, ys)
    spearman = stats.spearmanr(xs, ys)
    return Correlation(x, y, len(xs), float(pearson.statistic), float(pearson.pvalue),
                       float(spearman.statistic), float(spearman.pvalue))


def series_correlations(runs: Sequence[Run], x: str, y: str) -> list[Correlation]:
    """The correlation within each series (one training trajectory: its checkpoints) with at
    least 3 points, ``y`` labelled with the series; none when there is a single series (the
    pooled correlation is that one)."""
    series = sorted({run.series for run in runs})
    if len(series) < 2:
        return []
    out = []
    for s in series:
        c = correlation([run for run in runs if run.series == s], x, y)
        if c is not None:
            out.append(dataclasses.replace(c, y=f"{y} [{s or 'default'}]"))
    return out


def _scatter_figure(runs: Sequence[Run], pairs: list[tuple[str, str]], out: Path,
                    formats: Sequence[str], part: int) -> Figure:
    fig, axes = _new_figure(len(pairs), height=2.5)
    correlations = []
    for ax, (x, y) in zip(axes, pairs, strict=True):
        xs, ys, used = _paired_values(runs, x, y)
        series = sorted({run.series for run in used})
        for i, s in enumerate(series):
            pts = [(a, b) for a, b, run in zip(xs, ys, used, strict=True) if run.series == s]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=f"C{i % 10}",
                       label=s if 1 < len(series) <= MAX_LEGEND_SERIES else None)
        c = correlation(runs, x, y)
        correlations += [c, *series_correlations(runs, x, y)]
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"Pearson r = {c.pearson:.2f}, Spearman ρ = {c.spearman:.2f} (n = {c.n})")
        if min(xs) > 0 and max(xs) / min(xs) > 100:
            ax.set_xscale("log")
    _figure_legend(fig, axes)
    name = "scatter-sharpness-compression" + (f"-{part + 1}" if part else "")
    caption = ("Sharpness against compression measures, one point per run (colour: series). "
               "Pearson r on the raw values, Spearman ρ on ranks.")
    return Figure(name, caption, _save(fig, out, name, formats), correlations)
