"""KeyedTable: rows set as a whole, updated in place, the cursor kept on its row by key."""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult

from sengadm.tui.widgets.table import Column, KeyedTable, Row, cell

COLUMNS = (Column("name", "NAME", 12), Column("n", "N", 5, numeric=True))


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS)


def rows(*names: str, n: int = 0) -> list[Row]:
    return [(name, (cell(name), cell(n))) for name in names]


def shown(table: KeyedTable) -> list[list[str]]:
    return [[str(c).strip() for c in table.get_row(key)] for key in table.keys]


def test_updates_in_place_keep_the_cursor_on_its_row() -> None:
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(40, 20)) as pilot:
            table = app.query_one(KeyedTable)
            table.set_rows(rows("a", "b", "c"))
            table.move_cursor(row=1)
            await pilot.pause()
            assert table.cursor_key == "b"
            table.set_rows(rows("c", "b", "a"))  # re-sorted
            assert table.keys == ["c", "b", "a"] and table.cursor_key == "b"
            table.set_rows(rows("a", "x", "b"))  # c goes, x comes, the order changes
            assert table.keys == ["a", "x", "b"] and table.cursor_key == "b"
            assert table.cursor_row == 2
            before = table.row_count
            table.set_rows(rows("a", "x", "b", n=7))  # only cells change
            assert table.row_count == before and shown(table)[2] == ["b", "7"]
            many = [f"r{i:03d}" for i in range(200)]
            table.set_rows(rows(*many))
            table.move_cursor(row=150)
            await pilot.pause()
            table.set_rows(rows("r150", "r001"))  # most rows go at once: rebuilt
            assert table.keys == ["r150", "r001"] and table.cursor_key == "r150"
            table.set_rows([])
            assert table.cursor_key is None and table.keys == []

    asyncio.run(scenario())


def test_cell_text_is_never_markup() -> None:
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(40, 10)):
            table = app.query_one(KeyedTable)
            table.set_rows([("k", (cell("[bold red]x[/]"), cell("[link=evil]")))])
            assert shown(table) == [["[bold red]x[/]", "[link=evil]"]]

    asyncio.run(scenario())
