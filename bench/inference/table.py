"""Plain-text tables for the benchmark's output: numbers right-aligned, text left-aligned."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for values, row in zip(rows, cells, strict=True):
        aligned = [
            text.rjust(w) if isinstance(value, int | float) else text.ljust(w)
            for value, text, w in zip(values, row, widths, strict=True)
        ]
        print("  ".join(aligned).rstrip())


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return "-" if value is None else str(value)
