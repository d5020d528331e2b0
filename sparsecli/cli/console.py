"""The two consoles: data on stdout, progress/warnings/hints on stderr (so ``--format json | jq`` works).

Data printed into a pipe or a file (CI logs, ``> report.txt``) must keep every number: Rich
would lay a table out at ``$COLUMNS`` or 80 columns there, squeezing number columns to nothing
and cutting ids with an ellipsis. So when stdout is not a terminal, each print is laid out as
wide as its content needs; on a terminal Rich fits the window as usual.
"""
from rich.console import Console
from rich.measure import Measurement

MAX_PIPE_WIDTH = 10_000  # a sanity bound on one printed line, far beyond any table we print


class DataConsole(Console):
    def print(self, *objects, **kwargs):  # noqa: A003 (Rich's own name)
        if self.is_terminal or not objects or kwargs.get("width") is not None:
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

    def natural_width(self, *objects) -> int:
        """Columns the widest of ``objects`` takes when nothing is squeezed or folded (objects
        that cannot say, e.g. a Rule, count as the current width)."""
        options = self.options.update_width(MAX_PIPE_WIDTH)
        widths = [Measurement.get(self, options, o).maximum for o in objects]
        return max(w if w < MAX_PIPE_WIDTH else self.width for w in widths)


out_console = DataConsole()
err_console = Console(stderr=True)
