"""A participant's calendar drawn as SVG: the timeline of visits and milestones, and a taper's
dose-over-time chart. Pure: plain dataclasses in, an SVG string out; no database, no request,
no clock (the site's today is part of the input).

Geometry (the tests check it):
- the time axis runs from `Timeline.start` to `Timeline.end`, both days included, over
  `PLOT_WIDTH` px from `PLOT_LEFT`: a day is `PLOT_WIDTH / days` px wide, and day d starts at
  `day_x(d)`. A window [start, end] is a band from the start of its first day to the end of its
  last; a target, a done or booked day and today are marked at the middle of their day;
- the taper chart gives each week a column of `TAPER_PLOT_WIDTH / weeks` px; a week's dose is
  a point in the middle of its column at `TAPER_PLOT_BOTTOM - dose / y_max * TAPER_PLOT_HEIGHT`.

Status is said by colour *and* by text: every band carries a symbol from the legend, every row
says its counts in words, every mark has a tooltip; printed in black and white it still reads.
Every text from outside (visit names come from protocol files) is XML-escaped here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from html import escape

from django.utils.dateformat import format as date_format
from django.utils.translation import gettext as _

WIDTH = 1300
PLOT_LEFT = 284
PLOT_WIDTH = 1000
LABEL_WIDTH = PLOT_LEFT - 12
ROW_HEIGHT = 30
GROUP_HEIGHT = 22
BAND_HEIGHT = 14
FONT = "system-ui, 'DejaVu Sans', 'Noto Sans CJK JP', sans-serif"
TEXT = "#1b1b1b"
MUTED = "#455a64"
TODAY = "#c62828"


@dataclass(frozen=True)
class Look:
    """How a status is drawn: fill and outline colours, a dash pattern, and its symbol."""

    fill: str
    stroke: str
    symbol: str
    dash: str = ""


# Keys are those of scheduler.selectors.VISIT_GLANCE_LABELS (visits) and TAPER_STEP_LABELS
# plus the stored milestone statuses (milestones).
VISIT_LOOKS = {
    "upcoming": Look("#eceff1", "#78909c", "", "4 2"),
    "due": Look("#ffe082", "#b26a00", "○"),
    "booked": Look("#90caf9", "#0d47a1", "◆"),
    "overdue": Look("#ef9a9a", "#b71c1c", "!"),
    "done": Look("#a5d6a7", "#1b5e20", "✓"),
    "out_of_window": Look("#ce93d8", "#4a148c", "±"),
    "missed": Look("#bdbdbd", "#212121", "✕"),
    "cancelled": Look("#ffffff", "#757575", "⊘", "2 2"),
}
MILESTONE_LOOKS = {
    "planned": Look("#ffffff", "#37474f", ""),
    "done": Look("#a5d6a7", "#1b5e20", "✓"),
    "cancelled": Look("#ffffff", "#9e9e9e", "⊘", "2 2"),
    "past": Look("#b0bec5", "#37474f", ""),
    "current": Look("#fff176", "#e65100", "▶"),
}


# ----------------------------------------------------------------------------------------
# The input


@dataclass(frozen=True)
class TimelineRow:
    """One line of the chart: a protocol visit (all its occurrences), a milestone rule, or the
    unscheduled visits; `group` is its epoch (or "Milestones"), shown above its first row."""

    key: str
    label: str
    group: str
    title: str = ""


@dataclass(frozen=True)
class TimelineVisit:
    row: str
    code: str
    name: str
    target: dt.date
    window_start: dt.date
    window_end: dt.date
    status: str
    status_text: str
    # Where its row in the page's table is (the band links there, next to its actions).
    anchor: str = ""
    # The booked or actual day when there is one (drawn as a dot, inside the band or not).
    on: dt.date | None = None
    on_text: str = ""


@dataclass(frozen=True)
class TimelineMilestone:
    row: str
    code: str
    name: str
    due: dt.date
    status: str
    status_text: str
    anchor: str = ""


@dataclass(frozen=True)
class Timeline:
    title: str
    today: dt.date
    rows: tuple[TimelineRow, ...]
    visits: tuple[TimelineVisit, ...] = ()
    milestones: tuple[TimelineMilestone, ...] = ()
    # The legend: (status key, text) in the order shown.
    legend: tuple[tuple[str, str], ...] = ()
    # The axis; by default from the earliest to the latest date drawn (today included), a
    # week either side.
    start: dt.date | None = None
    end: dt.date | None = None


@dataclass(frozen=True)
class TaperWeek:
    week: int
    due: dt.date
    dose_mg: Decimal
    status: str  # past, current, planned, cancelled
    status_text: str
    held: bool = False
    flag: str = ""


@dataclass(frozen=True)
class TaperChart:
    code: str
    title: str
    weeks: tuple[TaperWeek, ...]
    target_mg: Decimal
    target_week: int
    # The protocol's cap for this participant (mg/kg × weight, or its ceiling); None when the
    # weight is not known.
    cap_mg: Decimal | None = None
    cap_text: str = ""
    unit: str = "mg/day"


# ----------------------------------------------------------------------------------------
# Small helpers


def mg(value: Decimal) -> str:
    """A dose as people write it: 36, 7.5 (never 36.00 or 7.50)."""
    return f"{value.normalize():f}"


def _n(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def text_width(text: str, size: float) -> float:
    """A generous estimate of a text's width (CJK characters are square)."""
    return sum(size if ord(char) >= 0x2E80 else size * 0.62 for char in text)


def fit(text: str, width: float, size: float) -> str:
    """The text, cut with an ellipsis so it fits `width` (the whole text goes in a tooltip)."""
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _attrs(**attributes: object) -> str:
    parts = []
    for name, value in attributes.items():
        if value is None or value == "":
            continue
        parts.append(f'{name.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"')
    return " ".join(parts)


def _el(tag: str, body: str = "", /, **attributes: object) -> str:
    attrs = _attrs(**attributes)
    opening = f"<{tag} {attrs}" if attrs else f"<{tag}"
    return f"{opening}>{body}</{tag}>" if body else f"{opening}/>"


def _text(x: float, y: float, text: str, **attributes: object) -> str:
    return _el("text", escape(text, quote=False), x=_n(x), y=_n(y), **attributes)


def _tooltip(text: str) -> str:
    return f"<title>{escape(text, quote=False)}</title>"


def _svg(width: float, height: float, label: str, body: Iterable[str], css_class: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" height="{_n(height)}" '
        f'role="img" aria-label="{escape(label, quote=True)}" '
        f'font-family="{escape(FONT, quote=True)}" font-size="12" '
        'style="max-width:100%;height:auto">' + _tooltip(label) + "".join(body) + "</svg>"
    )


def _iso(day: dt.date | None) -> str:
    return day.isoformat() if day is not None else "—"


# ----------------------------------------------------------------------------------------
# The timeline


@dataclass
class Axis:
    start: dt.date
    end: dt.date
    days: int = field(init=False)
    day_width: float = field(init=False)

    def __post_init__(self) -> None:
        self.days = (self.end - self.start).days + 1
        self.day_width = PLOT_WIDTH / self.days

    def day_x(self, day: dt.date) -> float:
        """Where the day starts."""
        return PLOT_LEFT + (day - self.start).days * self.day_width

    def mid_x(self, day: dt.date) -> float:
        return self.day_x(day) + self.day_width / 2

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


def timeline_axis(timeline: Timeline) -> Axis:
    dates = [timeline.today]
    for visit in timeline.visits:
        dates += [visit.window_start, visit.window_end, *([visit.on] if visit.on else [])]
    dates += [milestone.due for milestone in timeline.milestones]
    start = timeline.start or min(dates) - dt.timedelta(days=7)
    end = timeline.end or max(dates) + dt.timedelta(days=7)
    return Axis(start, max(end, start))


def _legend(items: Sequence[tuple[str, str, str]], top: float) -> tuple[list[str], float]:
    """Swatch, symbol and text per entry, wrapped onto as many lines as needed."""
    parts = [_text(4, top + 12, _("Status:"), font_weight="bold", fill=TEXT)]
    x, y = 4 + text_width(_("Status:"), 12) + 10, top
    for key, text, kind in items:
        width = 18 + text_width(text, 12) + 16
        if x + width > WIDTH - 4:
            x, y = 4, y + 20
        parts.append(f'<g class="legend-item" data-status="{escape(key, quote=True)}">')
        if kind == "visit":
            look = VISIT_LOOKS[key]
            parts.append(
                _el(
                    "rect",
                    x=_n(x),
                    y=_n(y + 2),
                    width="14",
                    height="12",
                    fill=look.fill,
                    stroke=look.stroke,
                    stroke_dasharray=look.dash,
                )
            )
            parts.append(_symbol(x + 7, y + 12, look))
        elif kind == "mark":
            parts.append(_mark_sample(key, x, y))
        parts.append(_text(x + 18, y + 12, text, fill=TEXT))
        parts.append("</g>")
        x += width
    return parts, y + 20 - top


def _mark_sample(key: str, x: float, y: float) -> str:
    if key == "target":
        return _el("line", x1=_n(x + 7), y1=_n(y), x2=_n(x + 7), y2=_n(y + 16), stroke=TEXT,
                   stroke_width="2")  # fmt: skip
    if key == "on":
        return _el("circle", cx=_n(x + 7), cy=_n(y + 8), r="3.5", fill=TEXT)
    if key == "milestone":
        return _diamond(x + 7, y + 8, 6, MILESTONE_LOOKS["planned"])
    return _el("line", x1=_n(x + 7), y1=_n(y), x2=_n(x + 7), y2=_n(y + 16), stroke=TODAY,
               stroke_width="2", stroke_dasharray="4 2")  # fmt: skip


def _symbol(x: float, y: float, look: Look, size: int = 11) -> str:
    if not look.symbol:
        return ""
    return _el(
        "text",
        escape(look.symbol, quote=False),
        x=_n(x),
        y=_n(y),
        text_anchor="middle",
        font_size=str(size),
        font_weight="bold",
        fill=look.stroke,
        class_="symbol",
    )


def _diamond(x: float, y: float, half: float, look: Look, **attributes: object) -> str:
    corners = [(x, y - half), (x + half, y), (x, y + half), (x - half, y)]
    points = " ".join(f"{_n(cx)},{_n(cy)}" for cx, cy in corners)
    return _el(
        "polygon",
        points=points,
        fill=look.fill,
        stroke=look.stroke,
        stroke_width="1.5",
        stroke_dasharray=look.dash,
        **attributes,
    )


def _ticks(axis: Axis, top: float, bottom: float) -> list[str]:
    """Week ticks (Mondays) when a week is wide enough, and a labelled line at each month."""
    parts: list[str] = []
    if axis.day_width * 7 >= 5:
        monday = axis.start + dt.timedelta(days=(7 - axis.start.weekday()) % 7)
        while monday <= axis.end:
            x = axis.day_x(monday)
            parts.append(
                _el(
                    "line",
                    x1=_n(x),
                    y1=_n(top - 5),
                    x2=_n(x),
                    y2=_n(top),
                    stroke=MUTED,
                    class_="week-tick",
                )  # fmt: skip
            )
            monday += dt.timedelta(days=7)
    months = []
    first = axis.start.replace(day=1)
    while first <= axis.end:
        if first >= axis.start:
            months.append(first)
        first = (first + dt.timedelta(days=32)).replace(day=1)
    # Translators: a Django date format, a month on the time axis ("Mar 2026").
    month_format = _("M Y")
    # The widest label a month can have (in English every month is as wide as "Sep 2026").
    label_width = text_width(date_format(dt.date(2026, 12, 1), month_format), 11) + 6
    month_width = axis.day_width * 28
    every = max(1, math.ceil(label_width / month_width))
    for index, month in enumerate(months):
        x = axis.day_x(month)
        parts.append(
            _el(
                "line",
                x1=_n(x),
                y1=_n(top - 12),
                x2=_n(x),
                y2=_n(bottom),
                stroke="#b0bec5",
                stroke_width="1",
                class_="month-tick",
                data_date=month.isoformat(),
            )  # fmt: skip
        )
        if index % every == 0 and x + label_width <= PLOT_LEFT + PLOT_WIDTH + 10:
            parts.append(_text(x + 3, top - 8, date_format(month, month_format), font_size="11",
                               fill=MUTED, class_="month-label"))  # fmt: skip
    return parts


def _row_summary(statuses: Iterable[tuple[str, str]]) -> list[str]:
    counts = Counter(statuses)
    return [
        _("%(count)s %(status)s") % {"count": count, "status": text}
        for (_key, text), count in counts.items()
    ]


def wrap(parts: Sequence[str], width: float, size: float) -> list[str]:
    """Parts joined by " · " into lines that fit `width` (a part too long alone is cut)."""
    lines: list[str] = []
    for part in parts:
        if lines and text_width(f"{lines[-1]} · {part}", size) <= width:
            lines[-1] = f"{lines[-1]} · {part}"
        else:
            lines.append(fit(part, width, size))
    return lines


def render_timeline(timeline: Timeline) -> str:
    """The SVG of a participant's visits and milestones on one time axis."""
    axis = timeline_axis(timeline)
    legend_items = [(key, text, "visit") for key, text in timeline.legend]
    legend_items += [
        ("target", _("target day"), "mark"),
        ("on", _("booked or done day"), "mark"),
        ("milestone", _("milestone"), "mark"),
        ("today", _("today"), "mark"),
    ]
    body, legend_height = _legend(legend_items, 4)
    axis_top = 4 + legend_height + 34

    # Rows, grouped by epoch in the order given.
    y = axis_top + 4
    row_y: dict[str, float] = {}
    rows_svg: list[str] = []
    group = None
    by_row_visits: dict[str, list[TimelineVisit]] = {}
    for visit in timeline.visits:
        by_row_visits.setdefault(visit.row, []).append(visit)
    by_row_milestones: dict[str, list[TimelineMilestone]] = {}
    for milestone in timeline.milestones:
        by_row_milestones.setdefault(milestone.row, []).append(milestone)
    for index, row in enumerate(timeline.rows):
        if row.group != group:
            group = row.group
            rows_svg.append(
                _text(
                    4,
                    y + 15,
                    fit(group, WIDTH - 8, 12),
                    font_weight="bold",
                    fill=TEXT,
                    class_="group-label",
                )  # fmt: skip
            )
            y += GROUP_HEIGHT
        row_y[row.key] = y
        statuses = [(v.status, v.status_text) for v in by_row_visits.get(row.key, [])]
        statuses += [(m.status, m.status_text) for m in by_row_milestones.get(row.key, [])]
        # The counts in words, on as many lines as they need (never cut).
        summary = wrap(_row_summary(statuses), LABEL_WIDTH - 8, 10)
        height = max(ROW_HEIGHT, 18 + 11 * len(summary))
        if index % 2 == 0:
            rows_svg.append(
                _el(
                    "rect", x="0", y=_n(y), width=str(WIDTH), height=str(height), fill="#f5f7f8"
                )  # fmt: skip
            )
        rows_svg.append(
            f'<g class="row-label" data-row="{escape(row.key, quote=True)}">'
            + _tooltip(row.title or row.label)
            + _text(8, y + 13, fit(row.label, LABEL_WIDTH - 8, 12), fill=TEXT)
            + "".join(
                _text(
                    8, y + 25 + 11 * number, line, font_size="10", fill=MUTED, class_="row-summary"
                )  # fmt: skip
                for number, line in enumerate(summary)
            )
            + "</g>"
        )
        y += height
    bottom = y + 4
    body.append(
        _el(
            "rect",
            x=str(PLOT_LEFT),
            y=_n(axis_top),
            width=str(PLOT_WIDTH),
            height=_n(bottom - axis_top),
            fill="none",
            stroke="#90a4ae",
        )  # fmt: skip
    )
    body += rows_svg
    body += _ticks(axis, axis_top, bottom)

    for visit in timeline.visits:
        if visit.row in row_y:
            body.append(_visit(visit, axis, row_y[visit.row]))
    for milestone in timeline.milestones:
        if milestone.row in row_y:
            body.append(_milestone(milestone, axis, row_y[milestone.row]))

    # Today, over everything else, said in words too.
    if axis.contains(timeline.today):
        x = axis.mid_x(timeline.today)
        label = _("today %(date)s") % {"date": timeline.today.isoformat()}
        anchor = "end" if x + text_width(label, 11) > WIDTH - 4 else "start"
        body.append(
            '<g class="today">'
            + _el(
                "line",
                x1=_n(x),
                y1=_n(axis_top - 22),
                x2=_n(x),
                y2=_n(bottom),
                stroke=TODAY,
                stroke_width="2",
                stroke_dasharray="4 2",
                class_="today-line",
            )  # fmt: skip
            + _text(
                x + (3 if anchor == "start" else -3),
                axis_top - 24,
                label,
                fill=TODAY,
                font_size="11",
                font_weight="bold",
                text_anchor=anchor,
            )  # fmt: skip
            + "</g>"
        )
    return _svg(WIDTH, bottom + 8, timeline.title, body, "participant-timeline")


def _visit(visit: TimelineVisit, axis: Axis, top: float) -> str:
    look = VISIT_LOOKS.get(visit.status, VISIT_LOOKS["upcoming"])
    band_y = top + (ROW_HEIGHT - BAND_HEIGHT) / 2
    x = axis.day_x(visit.window_start)
    width = ((visit.window_end - visit.window_start).days + 1) * axis.day_width
    target_x = axis.mid_x(visit.target)
    tip = _("%(code)s – %(name)s: %(status)s; target %(target)s, window %(start)s to %(end)s") % {
        "code": visit.code,
        "name": visit.name,
        "status": visit.status_text,
        "target": _iso(visit.target),
        "start": _iso(visit.window_start),
        "end": _iso(visit.window_end),
    }
    if visit.on is not None and visit.on_text:
        tip += f"; {visit.on_text} {_iso(visit.on)}"
    parts = [
        _tooltip(tip),
        _el(
            "rect",
            x=_n(x),
            y=_n(band_y),
            width=_n(width),
            height=str(BAND_HEIGHT),
            fill=look.fill,
            stroke=look.stroke,
            stroke_dasharray=look.dash,
            class_="window",
            data_start=visit.window_start.isoformat(),
            data_end=visit.window_end.isoformat(),
        ),
        _el(
            "line",
            x1=_n(target_x),
            y1=_n(band_y - 4),
            x2=_n(target_x),
            y2=_n(band_y + BAND_HEIGHT + 4),
            stroke=TEXT,
            stroke_width="2",
            class_="target",
            data_date=visit.target.isoformat(),
        ),
    ]
    if visit.on is not None:
        parts.append(
            _el(
                "circle",
                cx=_n(axis.mid_x(visit.on)),
                cy=_n(band_y + BAND_HEIGHT / 2),
                r="3.5",
                fill=TEXT,
                stroke="#ffffff",
                stroke_width="1",
                class_="on",
                data_date=visit.on.isoformat(),
            )  # fmt: skip
        )
    if look.symbol:
        parts.append(_symbol(x + width / 2, band_y - 5 if width < 9 else band_y + 11, look))
    body = "".join(parts)
    attrs = _attrs(class_="visit", data_status=visit.status, data_code=visit.code)
    group = f"<g {attrs}>{body}</g>"
    if visit.anchor:
        return f'<a href="#{escape(visit.anchor, quote=True)}">{group}</a>'
    return group


def _milestone(milestone: TimelineMilestone, axis: Axis, top: float) -> str:
    look = MILESTONE_LOOKS.get(milestone.status, MILESTONE_LOOKS["planned"])
    x = axis.mid_x(milestone.due)
    half = 8 if milestone.status == "current" else 6
    tip = f"{milestone.code} – {milestone.name}: {milestone.status_text}, {_iso(milestone.due)}"
    body = _tooltip(tip) + _diamond(x, top + ROW_HEIGHT / 2, half, look, class_="milestone-mark")
    attrs = _attrs(
        class_="milestone", data_status=milestone.status, data_date=milestone.due.isoformat()
    )
    group = f"<g {attrs}>{body}</g>"
    if milestone.anchor:
        return f'<a href="#{escape(milestone.anchor, quote=True)}">{group}</a>'
    return group


# ----------------------------------------------------------------------------------------
# The taper chart

TAPER_WIDTH = 1300
TAPER_PLOT_LEFT = 64
TAPER_PLOT_WIDTH = 1200
TAPER_PLOT_TOP = 64
TAPER_PLOT_HEIGHT = 260
TAPER_PLOT_BOTTOM = TAPER_PLOT_TOP + TAPER_PLOT_HEIGHT
PAST = "#263238"
PLANNED = "#1565c0"
CAP = "#b71c1c"
TARGET = "#1b5e20"


def taper_y_max(chart: TaperChart) -> Decimal:
    """The top of the dose axis: the highest dose or cap with room above, to a multiple of 5."""
    highest = max([w.dose_mg for w in chart.weeks] + [chart.target_mg, chart.cap_mg or Decimal(0)])
    return max(Decimal(5), ((highest * Decimal("1.1")) / 5).to_integral_value(ROUND_CEILING) * 5)


def _sample_line(colour: str, width: int, dash: str = "") -> str:
    return _el("line", x1="0", y1="8", x2="18", y2="8", stroke=colour, stroke_width=str(width),
               stroke_dasharray=dash)  # fmt: skip


def _sample_box(fill: str, stroke: str) -> str:
    return _el("rect", x="0", y="0", width="18", height="16", fill=fill, stroke=stroke)


def render_taper(chart: TaperChart) -> str:
    """A taper's weekly doses as steps over the weeks, with the cap and the target lines, held
    weeks shaded and labelled, the current week highlighted, past and planned drawn apart."""
    weeks = chart.weeks
    count = max(len(weeks), 1)
    column = TAPER_PLOT_WIDTH / count
    y_max = taper_y_max(chart)

    def y(dose: Decimal) -> float:
        return TAPER_PLOT_BOTTOM - float(dose / y_max) * TAPER_PLOT_HEIGHT

    def left(index: int) -> float:
        return TAPER_PLOT_LEFT + index * column

    body: list[str] = []
    legend = [
        ("past", _("given"), _sample_line(PAST, 3)),
        ("planned", _("planned"), _sample_line(PLANNED, 3, "6 4")),
        ("current", _("current week"), _sample_box("#fff176", "#e65100")),
        ("held", _("held (dose kept)"), _sample_box("url(#held-hatch)", "#6d4c41")),
        ("cap", _("cap"), _sample_line(CAP, 2, "8 3 2 3")),
        ("target", _("target"), _sample_line(TARGET, 2, "3 3")),
    ]
    body.append(
        "<defs>"
        '<pattern id="held-hatch" patternUnits="userSpaceOnUse" width="8" height="8" '
        'patternTransform="rotate(45)"><rect width="8" height="8" fill="#efebe9"/>'
        '<line x1="0" y1="0" x2="0" y2="8" stroke="#8d6e63" stroke-width="3"/></pattern>'
        "</defs>"
    )
    x = 4.0
    for key, text, sample in legend:
        body.append(
            f'<g class="legend-item" data-key="{key}" transform="translate({_n(x)},6)">'
            + sample
            + _text(24, 13, text, fill=TEXT)
            + "</g>"
        )
        x += 24 + text_width(text, 12) + 18

    # Weeks: the columns first (current and held shading), then the grid and the lines.
    for index, week in enumerate(weeks):
        if week.held:
            body.append(
                _el(
                    "rect",
                    x=_n(left(index)),
                    y=str(TAPER_PLOT_TOP),
                    width=_n(column),
                    height=str(TAPER_PLOT_HEIGHT),
                    fill="url(#held-hatch)",
                    class_="held",
                    data_week=str(week.week),
                )  # fmt: skip
            )
            body.append(
                _text(
                    left(index) + column / 2,
                    TAPER_PLOT_TOP + 14,
                    _("held"),
                    text_anchor="middle",
                    font_weight="bold",
                    fill="#4e342e",
                    class_="held-label",
                )  # fmt: skip
            )
        if week.status == "current":
            body.append(
                _el(
                    "rect",
                    x=_n(left(index)),
                    y=str(TAPER_PLOT_TOP - 18),
                    width=_n(column),
                    height=str(TAPER_PLOT_HEIGHT + 18),
                    fill="#fff176",
                    fill_opacity="0.55",
                    stroke="#e65100",
                    stroke_width="2",
                    class_="current-week",
                    data_week=str(week.week),
                )  # fmt: skip
            )
            body.append(
                _text(
                    left(index) + column / 2,
                    TAPER_PLOT_TOP - 5,
                    _("current"),
                    text_anchor="middle",
                    font_weight="bold",
                    fill="#bf360c",
                )  # fmt: skip
            )
    step = 5 if y_max <= 50 else 10
    tick = Decimal(0)
    while tick <= y_max:
        body.append(
            _el(
                "line",
                x1=str(TAPER_PLOT_LEFT),
                y1=_n(y(tick)),
                x2=str(TAPER_PLOT_LEFT + TAPER_PLOT_WIDTH),
                y2=_n(y(tick)),
                stroke="#e0e0e0",
            )  # fmt: skip
        )
        body.append(
            _text(
                TAPER_PLOT_LEFT - 6,
                y(tick) + 4,
                mg(tick),
                text_anchor="end",
                fill=MUTED,
                font_size="11",
            )  # fmt: skip
        )
        tick += step
    body.append(
        _text(8, TAPER_PLOT_TOP - 24, chart.unit, fill=MUTED, font_size="11", font_weight="bold")
    )
    body.append(
        _el(
            "rect",
            x=str(TAPER_PLOT_LEFT),
            y=str(TAPER_PLOT_TOP),
            width=str(TAPER_PLOT_WIDTH),
            height=str(TAPER_PLOT_HEIGHT),
            fill="none",
            stroke="#90a4ae",
        )  # fmt: skip
    )

    # The cap and the target: lines across the chart, each named with its value.
    lines = [
        ("target", chart.target_mg, TARGET, "3 3",
         _("target ≤ %(dose)s %(unit)s from week %(week)s")
         % {"dose": mg(chart.target_mg), "unit": chart.unit, "week": chart.target_week}),
    ]  # fmt: skip
    if chart.cap_mg is not None:
        cap_label = _("cap %(dose)s %(unit)s") % {"dose": mg(chart.cap_mg), "unit": chart.unit}
        if chart.cap_text:
            cap_label += f" ({chart.cap_text})"
        lines.insert(0, ("cap", chart.cap_mg, CAP, "8 3 2 3", cap_label))
    for key, dose, colour, dash, label in lines:
        body.append(
            f'<g class="{key}-line" data-mg="{mg(dose)}">'
            + _el(
                "line",
                x1=str(TAPER_PLOT_LEFT),
                y1=_n(y(dose)),
                x2=str(TAPER_PLOT_LEFT + TAPER_PLOT_WIDTH),
                y2=_n(y(dose)),
                stroke=colour,
                stroke_width="2",
                stroke_dasharray=dash,
            )  # fmt: skip
            # The cap's name on the right (the doses have come down there), the target's on
            # the left, under its line (the doses are still high there).
            + _text(
                TAPER_PLOT_LEFT + TAPER_PLOT_WIDTH - 4 if key == "cap" else TAPER_PLOT_LEFT + 4,
                y(dose) - 5 if key == "cap" else y(dose) + 14,
                label,
                text_anchor="end" if key == "cap" else "start",
                fill=colour,
                font_weight="bold",
                paint_order="stroke",
                stroke="#ffffff",
                stroke_width="3",
            )  # fmt: skip
            + "</g>"
        )

    # The doses: one step per week, solid when given, dashed when planned; a point per week
    # with its dose written above it.
    for index, week in enumerate(weeks):
        given = week.status in ("past", "current")
        colour = PAST if given else PLANNED
        top = y(week.dose_mg)
        if index > 0:
            body.append(
                _el(
                    "line",
                    x1=_n(left(index)),
                    y1=_n(y(weeks[index - 1].dose_mg)),
                    x2=_n(left(index)),
                    y2=_n(top),
                    stroke=colour,
                    stroke_width="1.5",
                    stroke_dasharray="" if given else "6 4",
                )  # fmt: skip
            )
        body.append(
            _el(
                "line",
                x1=_n(left(index)),
                y1=_n(top),
                x2=_n(left(index + 1)),
                y2=_n(top),
                stroke=colour,
                stroke_width="3",
                stroke_dasharray="" if given else "6 4",
                class_="dose-step",
            )  # fmt: skip
        )
        mid = left(index) + column / 2
        tip = _("week %(week)s, %(date)s: %(dose)s %(unit)s, %(status)s") % {
            "week": week.week,
            "date": week.due.isoformat(),
            "dose": mg(week.dose_mg),
            "unit": chart.unit,
            "status": week.status_text,
        }
        if week.held:
            tip += f" ({_('held')})"
        if week.flag:
            tip += f"; {week.flag}"
        body.append(
            f'<g class="dose" data-week="{week.week}" data-dose="{mg(week.dose_mg)}" '
            f'data-status="{escape(week.status, quote=True)}">'
            + _tooltip(tip)
            + _el(
                "circle",
                cx=_n(mid),
                cy=_n(top),
                r="5" if week.status == "current" else "4",
                fill=colour if given else "#ffffff",
                stroke=colour,
                stroke_width="2",
            )  # fmt: skip
            + _text(
                mid,
                top - 9,
                mg(week.dose_mg),
                text_anchor="middle",
                fill=colour,
                font_weight="bold",
                paint_order="stroke",
                stroke="#ffffff",
                stroke_width="3",
            )  # fmt: skip
            + "</g>"
        )
        # The week and its date under the axis.
        body.append(
            _text(
                mid,
                TAPER_PLOT_BOTTOM + 15,
                _("wk %(week)s") % {"week": week.week},
                text_anchor="middle",
                fill=TEXT,
                font_size="11",
            )  # fmt: skip
        )
        body.append(
            _text(
                mid,
                TAPER_PLOT_BOTTOM + 29,
                # Translators: a Django date format, a taper week's day ("16 Mar").
                date_format(week.due, _("j M")),
                text_anchor="middle",
                fill=MUTED,
                font_size="10",
            )  # fmt: skip
        )
    return _svg(TAPER_WIDTH, TAPER_PLOT_BOTTOM + 40, chart.title, body, "taper-chart")
