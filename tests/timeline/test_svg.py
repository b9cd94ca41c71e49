"""The timeline's SVG for exact inputs: where bands, targets and today fall, what each status
says in words, and names from protocol files escaped."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from scheduler.timeline import (
    PLOT_LEFT,
    PLOT_WIDTH,
    Timeline,
    TimelineMilestone,
    TimelineRow,
    TimelineVisit,
    render_timeline,
    timeline_axis,
    wrap,
)

D = dt.date
SVG = "{http://www.w3.org/2000/svg}"
LEGEND = (
    ("upcoming", "upcoming"),
    ("due", "due"),
    ("booked", "booked"),
    ("done", "done"),
    ("out_of_window", "out of window"),
    ("overdue", "overdue"),
    ("missed", "missed"),
    ("cancelled", "cancelled"),
)


def visit(code: str, target: D, before: int, after: int, status: str, **fields) -> TimelineVisit:
    return TimelineVisit(
        row=fields.pop("row", "treatment"),
        code=code,
        name=fields.pop("name", f"Visit {code}"),
        target=target,
        window_start=target - dt.timedelta(days=before),
        window_end=target + dt.timedelta(days=after),
        status=status,
        status_text=dict(LEGEND)[status],
        **fields,
    )


# 1 March to 8 June 2026 is 100 days: 10 px a day from PLOT_LEFT.
TIMELINE = Timeline(
    title="Timeline of niams/NIH-CC-001",
    today=D(2026, 3, 15),
    start=D(2026, 3, 1),
    end=D(2026, 6, 8),
    rows=(
        TimelineRow("screening", "V1 – Screening", "Screening"),
        TimelineRow("treatment", "INF – <Infusion> & co", "Treatment"),
        TimelineRow("endpoint", "PRIMARY – Primary endpoint", "Milestones"),
    ),
    visits=(
        visit("V1", D(2026, 3, 10), 3, 3, "done", row="screening", on=D(2026, 3, 11)),
        visit("INF#1", D(2026, 3, 20), 3, 3, "booked", name="<Infusion> & co", on=D(2026, 3, 21)),
        visit("INF#2", D(2026, 4, 17), 2, 5, "upcoming", name="<Infusion> & co"),
        visit("INF#3", D(2026, 5, 15), 0, 0, "cancelled", name="<Infusion> & co"),
    ),
    milestones=(
        TimelineMilestone(
            "endpoint", "PRIMARY", "Primary endpoint", D(2026, 5, 1), "planned", "planned"
        ),
    ),  # fmt: skip
    legend=LEGEND,
)


def parsed(timeline: Timeline = TIMELINE) -> ET.Element:
    return ET.fromstring(render_timeline(timeline))


def title(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None and found.text is not None
    return found.text


def number(element: ET.Element, name: str) -> float:
    return float(element.get(name, "nan"))


def of_class(root: ET.Element, tag: str, css_class: str) -> list[ET.Element]:
    return [el for el in root.iter(f"{SVG}{tag}") if el.get("class") == css_class]


def test_a_day_is_ten_pixels_over_a_hundred_days() -> None:
    axis = timeline_axis(TIMELINE)
    assert (axis.days, axis.day_width, PLOT_LEFT, PLOT_WIDTH) == (100, 10.0, 284, 1000)


def test_each_window_is_a_band_from_the_start_of_its_first_day_to_the_end_of_its_last() -> None:
    bands = of_class(parsed(), "rect", "window")

    assert [(b.get("data-start"), b.get("x"), b.get("width")) for b in bands] == [
        ("2026-03-07", "344", "70"),  # 6 days after 1 March, 7 days wide
        ("2026-03-17", "444", "70"),
        ("2026-04-15", "734", "80"),
        ("2026-05-15", "1034", "10"),  # a one-day window is one day wide
    ]


def test_one_target_mark_per_visit_in_the_middle_of_its_day() -> None:
    targets = of_class(parsed(), "line", "target")

    assert [(t.get("data-date"), t.get("x1"), t.get("x2")) for t in targets] == [
        ("2026-03-10", "379", "379"),
        ("2026-03-20", "479", "479"),
        ("2026-04-17", "759", "759"),
        ("2026-05-15", "1039", "1039"),
    ]
    # Booked and done days are dots of their own, where they happened.
    dots = of_class(parsed(), "circle", "on")
    assert [(d.get("data-date"), d.get("cx")) for d in dots] == [
        ("2026-03-11", "389"),
        ("2026-03-21", "489"),
    ]
    milestone = of_class(parsed(), "polygon", "milestone-mark")
    assert len(milestone) == 1 and milestone[0].get("points", "").startswith("899,")


def test_today_is_one_line_in_the_middle_of_its_day_and_says_so() -> None:
    root = parsed()
    today = of_class(root, "line", "today-line")

    assert [(line.get("x1"), line.get("x2")) for line in today] == [("429", "429")]
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "today 2026-03-15" in texts


def test_status_is_said_in_words_in_the_legend_the_rows_and_the_tooltips() -> None:
    root = parsed()
    legend = [
        (g.get("data-status"), "".join(g.itertext()).strip())
        for g in of_class(root, "g", "legend-item")
    ]
    assert legend[:8] == [
        ("upcoming", "upcoming"),
        ("due", "○due"),
        ("booked", "◆booked"),
        ("done", "✓done"),
        ("out_of_window", "±out of window"),
        ("overdue", "!overdue"),
        ("missed", "✕missed"),
        ("cancelled", "⊘cancelled"),
    ]
    summaries = ["".join(t.itertext()) for t in of_class(root, "text", "row-summary")]
    assert summaries == ["1 done", "1 booked · 1 upcoming · 1 cancelled", "1 planned"]
    tooltips = [title(g) for g in of_class(root, "g", "visit")]
    assert tooltips[0] == (
        "V1 – Visit V1: done; target 2026-03-10, window 2026-03-07 to 2026-03-13"
    )
    # Each band carries its status's symbol too (colour is never the only sign).
    symbols = [
        "".join(s.itertext())
        for g in of_class(root, "g", "visit")
        for s in g.iter(f"{SVG}text")
        if s.get("class") == "symbol"
    ]
    assert symbols == ["✓", "◆", "⊘"]


def test_names_from_protocol_files_are_escaped() -> None:
    svg = render_timeline(TIMELINE)

    assert "<Infusion>" not in svg
    assert "INF – &lt;Infusion&gt; &amp; co" in svg
    root = ET.fromstring(svg)
    labels = [title(g) for g in of_class(root, "g", "row-label")]
    assert labels[1] == "INF – <Infusion> & co"
    tooltip = title(of_class(root, "g", "visit")[1])
    assert tooltip.startswith("INF#1 – <Infusion> & co: booked;")


def test_repeating_visits_share_one_row() -> None:
    root = parsed()
    rows = of_class(root, "g", "row-label")
    bands = of_class(root, "rect", "window")

    assert [row.get("data-row") for row in rows] == ["screening", "treatment", "endpoint"]
    # The three infusions are on one line: their bands share a y.
    assert len({band.get("y") for band in bands[1:]}) == 1
    assert bands[0].get("y") != bands[1].get("y")


def test_without_bounds_the_axis_runs_a_week_either_side_of_what_is_drawn() -> None:
    axis = timeline_axis(
        Timeline(
            title="t",
            today=D(2026, 3, 15),
            rows=TIMELINE.rows,
            visits=TIMELINE.visits,
            milestones=TIMELINE.milestones,
        )
    )

    assert (axis.start, axis.end) == (D(2026, 2, 28), D(2026, 5, 22))


def test_sixty_weekly_visits_on_one_row_do_not_overlap() -> None:
    weekly = tuple(
        visit(f"TRT#{n}", D(2026, 1, 5) + dt.timedelta(weeks=n - 1), 2, 2, "upcoming")
        for n in range(1, 61)
    )
    root = parsed(
        Timeline(
            title="t",
            today=D(2026, 1, 1),
            rows=(TimelineRow("treatment", "TRT – Weekly injection", "Treatment"),),
            visits=weekly,
            legend=LEGEND,
        )
    )
    bands = of_class(root, "rect", "window")
    edges = [(number(b, "x"), number(b, "x") + number(b, "width")) for b in bands]

    assert len(bands) == 60
    assert all(
        end < next_start for (_, end), (next_start, _) in zip(edges, edges[1:], strict=False)
    )
    assert ["".join(t.itertext()) for t in of_class(root, "text", "row-summary")] == ["60 upcoming"]


def test_a_long_row_summary_wraps_onto_more_lines_and_is_never_cut() -> None:
    parts = ["12 done", "1 out of window", "1 overdue", "1 due", "38 upcoming"]

    assert wrap(parts, 120, 10) == [
        "12 done",
        "1 out of window",
        "1 overdue · 1 due",
        "38 upcoming",
    ]
    many = tuple(
        visit(f"TRT#{n}", D(2026, 3, 2) + dt.timedelta(weeks=n), 1, 1, status)
        for n, status in enumerate(["done", "out_of_window", "overdue", "due", "missed"] * 2)
    )
    root = parsed(Timeline(title="t", today=D(2026, 3, 1), rows=TIMELINE.rows[1:2], visits=many))
    summaries = ["".join(t.itertext()) for t in of_class(root, "text", "row-summary")]
    assert summaries == ["2 done · 2 out of window · 2 overdue", "2 due · 2 missed"]
    lines = [number(t, "y") for t in of_class(root, "text", "row-summary")]
    assert lines[1] - lines[0] == 11
