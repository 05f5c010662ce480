"""Bulk item and event files: JSONL and CSV, bad lines reported with their numbers."""

from __future__ import annotations

import pytest

from apps.recommend.events import EventRejected
from apps.recommend.imports import (
    FileFormat,
    ImportFileError,
    detect_format,
    read_events,
    read_items,
)


def test_items_from_csv_with_tags_and_extra_columns_as_attributes() -> None:
    data = (
        b"external_id,title,description,tags,category,active,price_eur\n"
        b"A1,Trail shoe,Light shoe,running|trail,footwear,true,129\n"
        b'A2,"Tent, two person",,,tents,false,\n'
    )
    first, second = read_items(data, FileFormat.CSV)
    assert first.tags == ["running", "trail"] and first.attributes == {"price_eur": 129}
    assert second.title == "Tent, two person" and second.active is False
    assert second.description is None and second.attributes == {}


def test_bad_lines_are_all_reported_and_nothing_is_returned() -> None:
    data = b'{"external_id": "A1", "title": "Shoe"}\n{"external_id": "A2"}\n\nnot json\n'
    with pytest.raises(ImportFileError) as caught:
        read_items(data, FileFormat.JSONL)
    lines = [line for line, _ in caught.value.errors]
    assert lines == [2, 4]
    assert "title" in caught.value.errors[0][1] and "not JSON" in caught.value.errors[1][1]
    with pytest.raises(ImportFileError, match="not valid UTF-8"):
        read_items(b'{"external_id": "A1", "title": "\xff"}', FileFormat.JSONL)
    with pytest.raises(ImportFileError, match="no records"):
        read_items(b"\n\n", FileFormat.JSONL)


@pytest.mark.parametrize("column", ["tags", "attributes", "category"])
def test_csv_rows_with_too_few_or_too_many_values_are_named(column: str) -> None:
    data = (
        f"external_id,title,{column}\n".encode()
        + b"F-33,Full row,{}\nF-34,Short row\nF-35\nF-36,Long row,{},y\n"
    )
    with pytest.raises(ImportFileError) as caught:
        read_items(data, FileFormat.CSV)
    assert caught.value.errors == [
        (3, "2 values but the header has 3"),
        (4, "1 values but the header has 3"),
        (5, "4 values but the header has 3"),
    ]
    short = read_events(b"event_id,user_id,item_id,type,value,timestamp\ne4,u1\n", FileFormat.CSV)
    assert short.events == [] and short.errors == [(2, "2 values but the header has 6")]


def test_events_from_csv_and_format_detection() -> None:
    data = (
        b"event_id,user_id,item_id,type,value,timestamp\n"
        b"e1,u1,A1,rating,4,2026-11-01T10:00:00Z\n"
        b"e2,u1,A2,view,,2026-11-01T10:01:00+01:00\n"
    )
    rating, view = read_events(data, detect_format("events.csv", None, data)).events
    assert rating.value == 4.0 and view.value is None
    assert view.timestamp is not None and view.timestamp.utcoffset().total_seconds() == 3600
    undated = read_events(b"user_id,item_id,type,timestamp\nu1,A1,view,yesterday\n", FileFormat.CSV)
    assert [line for line, _ in undated.errors] == [2] and "line 2" in str(undated.rejected())
    assert detect_format(None, "application/x-ndjson", b"") is FileFormat.JSONL
    row = '{"user_id": "u", "item_id": "%s", "type": "view"}'
    jsonl = f"\n{row % 'A'}\n\n{row % 'B'}\n".encode()
    upload = read_events(jsonl, FileFormat.JSONL)
    assert [e.item_id for e in upload.events] == ["A", "B"] and upload.lines == [2, 4]
    refused = upload.rejected(EventRejected({1: "unknown item 'B'"}))
    assert refused.errors == [(4, "unknown item 'B'")] and "line 4: unknown item" in str(refused)
    assert detect_format(None, None, b'  {"a": 1}') is FileFormat.JSONL
    assert detect_format(None, None, b"external_id,title") is FileFormat.CSV
