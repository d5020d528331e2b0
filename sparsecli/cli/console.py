"""The two consoles: data on stdout, progress/warnings/hints on stderr (so ``--format json | jq`` works).

Data printed into a pipe or a file (CI logs, ``> report.txt``) must keep every number: Rich
would lay a table out at 80 columns there, squeezing number columns to nothing and cutting ids
with an ellipsis. So when stdout is not a terminal, each print is laid out as wide as its content
needs; an explicit ``COLUMNS`` (``COLUMNS=80 sparsecli presets | cat``) is the width to wrap text
to wherever that cuts no word, as tables whose id and number columns do not wrap allow. On a
terminal Rich fits the window as usual.

Rich pads every table cell and title to its column's width; the data console drops those
trailing blanks, so a report pasted into a file, a diff or a test has no invisible tails.
"""
import os

from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segment

MAX_PIPE_WIDTH = 10_000  # a sanity bound on one printed line, far beyond any table we print


class DataConsole(Console):
    def print(self, *objects, **kwargs):  # noqa: A003 (Rich's own name)
        if not (kwargs.get("soft_wrap") or kwargs.get("crop") is False):
            # (soft-wrapped output, e.g. JSON, is printed unwrapped and uncropped: no line to trim)
            objects = tuple(o if isinstance(o, str) else _Trimmed(o) for o in objects)
        if self.is_terminal or not objects or kwargs.get("width") is not None:
            return super().print(*objects, **kwargs)
        if _columns_given() and self.natural_width(*objects, least=True) <= self.width:
            return super().print(*objects, **kwargs)
        need = self.natural_width(*objects)
        if need <= self.width:
            return super().print(*objects, **kwargs)
        saved = self._width
        self.width = need
        try:
            return super().print(*objects, **kwargs)
        finally:
            self._width = saved

    def natural_width(self, *objects, least: bool = False) -> int:
        """Columns the widest of ``objects`` takes when nothing is squeezed or folded, or with
        ``least``, when text wraps between words but no word (number, id) is cut (objects that
        cannot say, e.g. a Rule, count as the current width)."""
        options = self.options.update_width(MAX_PIPE_WIDTH)
        measures = [Measurement.get(self, options, o) for o in objects]
        widths = [m.minimum if least else m.maximum for m in measures]
        return max(w if w < MAX_PIPE_WIDTH else self.width for w in widths)


def _columns_given() -> bool:
    """An explicit COLUMNS is a width the user asked for, pipe or not: content that can wrap to
    it without cutting a word (a number, an id) is laid out at that width."""
    return os.environ.get("COLUMNS", "").isdigit()


class _Trimmed:
    """``renderable`` line by line, without the blanks that end each line."""

    def __init__(self, renderable):
        self.renderable = renderable

    def __rich_console__(self, console, options):
        for line in console.render_lines(self.renderable, options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()

    def __rich_measure__(self, console, options):
        return Measurement.get(console, options, self.renderable)


def _rstrip(line: list) -> list:
    line = list(line)
    while line:
        seg = line[-1]
        style = seg.style
        if seg.control or style is not None and (style.bgcolor or style.reverse or style.underline or style.strike):
            break  # blanks that show
        text = seg.text.rstrip(" ")
        if text:
            line[-1] = Segment(text, style)
            break
        line.pop()
    return line


out_console = DataConsole()
err_console = Console(stderr=True)
