"""A DataTable kept equal to a list of keyed rows by changing only what differs.

`KeyedTable.set_rows(rows)` takes the rows as they should be, in order, each a key and a tuple
of `Cell`s (text and style). Rows that went away are removed, new ones added, changed cells
updated one by one and the order fixed by one sort, so the table never flickers, the cursor
stays on the row it was on (by key, wherever that row moved) and the scroll position stays.
Cell text is never read as markup: names from the daemon are shown as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist, RowKey


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its key, header label, width and whether its values are right-aligned."""

    key: str
    label: str
    width: int
    numeric: bool = False


Cell = tuple[str, str]
"""A cell's text and Rich style ('' for the default)."""
Row = tuple[str, tuple[Cell, ...]]
"""A row's key and its cells, one per column."""


class _KeyText(Text):
    """The first cell of a row: it knows its row's key, so that rows can be sorted by key."""

    def __init__(self, row_key: str, text: str, **kwargs: Any) -> None:
        super().__init__(text, **kwargs)
        self.row_key = row_key


def cell(text: object, style: str = "") -> Cell:
    """A cell from any value."""
    return (str(text), style)


class KeyedTable(DataTable[Text]):
    """A table whose rows are set as a whole and updated in place (see the module doc)."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", cell_padding=0, **kwargs)
        self.column_specs = tuple(columns)
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for column in self.column_specs:
            label = Text(column.label, justify="right" if column.numeric else "left")
            if not column.numeric:
                label = Text(" ") + label
            self.add_column(label, width=column.width + 1, key=column.key)
        self.columns_added()

    def columns_added(self) -> None:
        """Called once the columns exist (Textual calls every class's `on_mount`, so
        subclasses hook in here rather than there)."""

    # -- rows ----------------------------------------------------------------------------------

    def _text(self, key: str, index: int, value: Cell) -> Text:
        column = self.column_specs[index]
        text, style = value
        shown = text.rjust(column.width + 1) if column.numeric else " " + text
        if index == 0:
            return _KeyText(key, shown, style=style, no_wrap=True, overflow="ellipsis")
        return Text(shown, style=style, no_wrap=True, overflow="ellipsis")

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor (None for an empty table)."""
        if not self.row_count:
            return None
        try:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return row_key.value

    @property
    def keys(self) -> list[str]:
        """The row keys in display order."""
        return list(self._order)

    def set_rows(self, rows: Sequence[Row]) -> None:
        """Make the table show `rows` in this order, changing only what differs."""
        cursor = self.cursor_key
        wanted = dict(rows)
        gone = [key for key in self._cells if key not in wanted]
        if len(gone) > 64 and len(gone) > len(self._cells) // 2:
            # Removing a row renumbers all others: when most go, starting afresh is cheaper.
            self.clear()
            self._cells.clear()
            self._order.clear()
            gone = []
        for key in gone:
            self.remove_row(key)
            del self._cells[key]
        if gone:
            dropped = set(gone)
            self._order = [k for k in self._order if k not in dropped]
        changed = False
        for key, cells in rows:
            old = self._cells.get(key)
            if old is None:
                self.add_row(*(self._text(key, i, c) for i, c in enumerate(cells)), key=key)
                self._order.append(key)
            elif old != cells:
                self._update_row(key, old, cells)
                changed = True
            self._cells[key] = cells
        if changed:
            # One invalidation for the whole batch (update_cell invalidates per cell).
            self._update_count += 1
            self.refresh()
        order = [key for key, _ in rows]
        if order != self._order:
            position = {key: i for i, key in enumerate(order)}
            self.sort(key=lambda values: position[values[0].row_key])
            self._order = order
        if cursor is not None and cursor in wanted:
            index = position_of(self, cursor)
            if index is not None and index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def _update_row(self, key: str, old: tuple[Cell, ...], cells: tuple[Cell, ...]) -> None:
        """Put the changed cells of row `key` into the table's data without a refresh each:
        with 1,000 rows changing every second, `DataTable.update_cell`'s per-cell refresh is
        most of the cost. The caller invalidates once. (DataTable keeps its cells in `_data`,
        row key -> column key -> cell; tests/tui/test_table.py fails if that changes.)"""
        data = self._data[RowKey(key)]
        for i, (before, after) in enumerate(zip(old, cells, strict=True)):
            if before != after:
                data[ColumnKey(self.column_specs[i].key)] = self._text(key, i, after)

    def row_key_at(self, index: int) -> str | None:
        """The key of the row shown at `index`."""
        return self._order[index] if 0 <= index < len(self._order) else None


def position_of(table: DataTable[Any], key: str) -> int | None:
    """The display index of row `key` in `table`, or None."""
    try:
        return table.get_row_index(RowKey(key))
    except RowDoesNotExist:
        return None
