"""``augdistill bench``: grid runs, records, resume, and the table beside the published figures."""

from __future__ import annotations

import json

from augdistill.runs.bench import PUBLISHED, QUICK_GRID, BenchCell, BenchSettings, bench_table, grid, run_bench

TINY = BenchSettings(iterations=6, eval_every=3, val_nets=1, val_epochs=2, eval_epochs=2, nets=2)


def test_grid_is_the_product_of_its_axes():
    cells = grid(["wang", "dm"], ["digits"], [1, 10], ["none", "fixed"], [0, 1])
    assert len(cells) == 16 and len({c.name for c in cells}) == 16


def test_bench_records_every_cell_resumes_and_tabulates(tmp_path):
    cells = (BenchCell("wang", "digits", 1, "none", 0), BenchCell("wang", "digits", 1, "fixed", 0))
    logs: list[str] = []
    record = run_bench(cells[:1], TINY, tmp_path, log=logs.append)
    cell = record["cells"][cells[0].name]
    assert cell["epochs"] == 2 and cell["augmentation"] == "dsa" and len(cell["accs"]) == 2
    assert cell["iterations"] == 6 and cell["selected_iteration"] in (3, 6)
    assert "digits/ipc1" in record["floors"]
    record = run_bench(cells, TINY, tmp_path, log=logs.append)  # the first cell is not run again
    assert any("done before, skipped" in line for line in logs)
    assert json.loads((tmp_path / "bench.json").read_text())["cells"].keys() == {c.name for c in cells}
    assert record["cells"][cells[1].name]["augmentation"] == "run"
    table = (tmp_path / "bench.md").read_text()
    assert table.count("| wang | digits | 1 |") == 2 and "2 epochs" in table


def test_table_shows_the_published_figure_of_the_paper_the_cell_reproduces():
    accs = [0.70, 0.72]
    record = {"settings": {"eval_epochs": 1000, "nets": 2}, "floors": {},
              "cells": {"x": {"method": "dc", "dataset": "fashion-mnist", "ipc": 1, "policy": "fixed", "accs": accs,
                              "distill_seconds": 60.0, "iterations": 10}}}
    row = [line for line in bench_table(record).splitlines() if line.startswith("| dc |")][0]
    assert f"{PUBLISHED[('dc', 'fixed', 'fashion-mnist', 1)]} (DSA)" in row and "71.00 ± 1.41" in row


def test_the_quick_grid_has_a_cell_a_paper_reports():
    """The README's quick table shows at least one published figure beside ours."""
    assert any((c.method, c.policy, c.dataset, c.ipc) in PUBLISHED for c in QUICK_GRID)
