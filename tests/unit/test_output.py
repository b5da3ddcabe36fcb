"""CSV output: a header row, plain cells, quotes only where needed, and the UTF-8 mark spreadsheets look for."""

from __future__ import annotations

import csv
import io

from spendgate.cli.output import Table, csv_text


def test_a_table_as_csv_reads_back_cell_for_cell() -> None:
    table = Table(["code", "name", "cost_usd"], [["ENG-1000", 'Engineering, "core"', "1234.50"],
                                                  ["FIN-2000", "Finanzen & Controlling (Zürich)", "0.000000015"]])

    text = csv_text(table, byte_order_mark=True)

    assert text.startswith("\ufeffcode,name,cost_usd\r\n")
    assert list(csv.reader(io.StringIO(text.removeprefix("\ufeff")))) == [list(table.columns), *table.rows]
    assert 'ENG-1000,"Engineering, ""core""",1234.50\r\n' in text
    assert not csv_text(table).startswith("\ufeff")
