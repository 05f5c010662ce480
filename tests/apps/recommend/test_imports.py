"""Bulk item and event files: JSONL and CSV, bad lines reported with their numbers; long event
files read and stored a chunk at a time."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import ItemIn, upsert_items
from apps.recommend.events import EventIn, EventRejected, RatingScale
from apps.recommend.imports import (
    FileChunk,
    FileFormat,
    ImportFileError,
    detect_format,
    event_chunks,
    import_event_file,
    import_item_file,
    item_chunks,
)
from apps.recommend.models import Interaction, Item
from core.storage.engine import get_session_factory, session_scope


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
    data = (
        b'{"external_id": "A1", "title": "Shoe"}\n{"external_id": "A2", "title": ""}\n\nnot json\n'
    )
    with pytest.raises(ImportFileError) as caught:
        read_items(data, FileFormat.JSONL)
    lines = [line for line, _ in caught.value.errors]
    assert lines == [2, 4]
    assert "title" in caught.value.errors[0][1] and "not JSON" in caught.value.errors[1][1]
    with pytest.raises(ImportFileError, match="not valid UTF-8"):
        read_items(b'{"external_id": "A1", "title": "\xff"}', FileFormat.JSONL)
    with pytest.raises(ImportFileError, match="no records"):
        read_items(b"\n\n", FileFormat.JSONL)


@pytest.mark.parametrize(
    ("data", "file_format", "error"),
    [
        (b"id;title\nA1;Shoe\n", FileFormat.CSV, "separated by commas; this header uses ';'"),
        (b"id\ttitle\nA1\tShoe\n", FileFormat.CSV, "this header uses '\\t'"),
        (b'[{"id": "A1", "title": "Shoe"}]\n', FileFormat.JSONL, "a JSON array: a JSONL file"),
        (b'{"items": [{"id": "A1", "title": "Shoe"}]}', FileFormat.JSONL, "wrapping a list of 1"),
        (b'[\n  {"id": "A1", "title": "Shoe"}\n]\n', FileFormat.JSONL, "over many lines"),
    ],
)
def test_files_of_another_shape_say_what_shape_to_send(
    data: bytes, file_format: FileFormat, error: str
) -> None:
    with pytest.raises(ImportFileError) as caught:
        read_items(data, file_format)
    [(line, message)] = caught.value.errors
    assert line == 1 and error in message, message


def read_events(data: bytes, file_format: FileFormat) -> FileChunk[EventIn]:
    (whole,) = event_chunks(io.BytesIO(data), file_format, size=None)
    return whole


def read_items(data: bytes, file_format: FileFormat) -> list[ItemIn]:
    (whole,) = item_chunks(io.BytesIO(data), file_format, size=None)
    if whole.errors:
        raise ImportFileError(whole.errors)
    return whole.records


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
    assert short.records == [] and short.errors == [(2, "2 values but the header has 6")]


def test_events_from_csv_and_format_detection() -> None:
    data = (
        b"event_id,user_id,item_id,type,value,timestamp\n"
        b"e1,u1,A1,rating,4,2026-11-01T10:00:00Z\n"
        b"e2,u1,A2,view,,2026-11-01T10:01:00+01:00\n"
    )
    rating, view = read_events(data, detect_format("events.csv", None, data)).records
    assert rating.value == 4.0 and view.value is None
    assert view.timestamp is not None and view.timestamp.utcoffset().total_seconds() == 3600
    undated = read_events(b"user_id,item_id,type,timestamp\nu1,A1,view,yesterday\n", FileFormat.CSV)
    assert [line for line, _ in undated.errors] == [2] and undated.rejected() == undated.errors
    assert detect_format(None, "application/x-ndjson", b"") is FileFormat.JSONL
    row = '{"user_id": "u", "item_id": "%s", "type": "view"}'
    jsonl = f"\n{row % 'A'}\n\n{row % 'B'}\n".encode()
    upload = read_events(jsonl, FileFormat.JSONL)
    assert [e.item_id for e in upload.records] == ["A", "B"] and upload.lines == [2, 4]
    assert upload.rejected(EventRejected({1: "unknown item 'B'"})) == [(4, "unknown item 'B'")]
    assert detect_format(None, None, b'  {"a": 1}') is FileFormat.JSONL
    assert detect_format(None, None, b"external_id,title") is FileFormat.CSV


def test_event_chunks_read_a_file_as_it_is_needed() -> None:
    rows = [f'{{"user_id": "u{i}", "item_id": "A", "type": "view"}}\n' for i in range(7)]
    rows.insert(3, "not json\n")
    read: list[bytes] = []

    class Handle(io.BytesIO):
        def __next__(self) -> bytes:
            read.append(super().__next__())
            return read[-1]

    chunks = event_chunks(Handle("".join(rows).encode()), FileFormat.JSONL, size=3)
    first = next(chunks)
    assert [e.user_id for e in first.records] == ["u0", "u1", "u2"] and len(read) == 3
    rest = list(chunks)
    assert [c.lines for c in rest] == [[5, 6], [7, 8]]  # a bad line counts in a chunk's size
    assert rest[0].errors == [(4, "not JSON: Expecting value at column 1")]
    (empty,) = event_chunks(io.BytesIO(b"\n"), FileFormat.JSONL, size=3)
    assert empty.errors == [(1, "the file holds no records")]


def test_lines_no_answer_could_carry_back_are_bad_lines_not_a_crash() -> None:
    deep = '{"user_id": "u1", "item_id": "A", "type": "view", "x": ' + "[" * 5000 + "]" * 5000
    lines = [
        deep + "}",
        '{"user_id": "u1", "item_id": "A", "type": "rating", "value": 1e309}',
        '{"user_id": "u1", "item_id": "A", "type": "view", "x": ' + "9" * 5000 + "}",
        '{"user_id": "u\\ud800", "item_id": "A", "type": "view"}',
    ]
    (chunk,) = event_chunks(io.BytesIO("\n".join(lines).encode()), FileFormat.JSONL, size=10)
    assert chunk.records == []
    assert chunk.errors == [
        (1, "not JSON that can be stored: JSON nested deeper than 32 levels"),
        (2, "not JSON that can be stored: the number 1e309 is out of range"),
        (3, "not JSON: a number is longer than 4,300 digits"),
        (4, "not JSON that can be stored: text holds a lone surrogate (\\ud800-\\udfff), "
            "which is not a character"),
    ]  # fmt: skip


def _event_lines(*events: tuple[str, str, str]) -> str:
    return "".join(
        f'{{"event_id": "{event_id}", "user_id": "{user}", "item_id": "{item}", "type": "view"}}\n'
        for event_id, user, item in events
    )


def test_a_long_event_file_is_checked_whole_then_stored_a_chunk_at_a_time(
    database_url: str, tmp_path: Path
) -> None:
    factory = get_session_factory(database_url)
    with session_scope(factory) as session:
        upsert_items(session, [ItemIn(external_id=name, title=name) for name in ("A", "B")])
    path = tmp_path / "events.jsonl"
    good = [(f"e{i}", f"u{i}", "AB"[i % 2]) for i in range(10)]
    # Problems in the first and the third chunk of 4: all are named, and nothing is stored.
    path.write_text(
        _event_lines(*good[:2], ("e-x", "u", "ZZ"), *good[2:7])
        + '{"user_id": "u"}\n'
        + _event_lines(*good[7:])
        + '{"event_id": "e-y", "user_id": "u", "item_id": "A", "type": "rating", "value": 9}\n'
    )
    with pytest.raises(ImportFileError) as caught:
        import_event_file(factory, path, RatingScale(), size=4)
    assert [line for line, _ in caught.value.errors] == [3, 9, 13]
    assert "unknown item 'ZZ'" in caught.value.errors[0][1]
    assert "outside the rating scale" in caught.value.errors[2][1]
    assert "nothing imported" in str(caught.value) and _stored(factory) == 0

    path.write_text(_event_lines(*good))
    report = import_event_file(factory, path, RatingScale(), size=4)
    assert (report.stored, report.duplicates) == (10, 0) and _stored(factory) == 10
    again = import_event_file(factory, path, RatingScale(), size=4)
    assert (again.stored, again.duplicates) == (0, 10)

    # An id reused for another event in a later chunk: caught when that chunk is stored.
    path.write_text(_event_lines(*[(f"n{i}", "v", "A") for i in range(5)], ("n1", "w", "B")))
    with pytest.raises(ImportFileError) as caught:
        import_event_file(factory, path, RatingScale(), size=4)
    assert caught.value.stored == 4 and caught.value.errors[0][0] == 6
    assert "the file's first 4 record(s) are stored" in str(caught.value)
    path.write_text(_event_lines(*[(f"n{i}", "v", "A") for i in range(5)], ("n5", "w", "B")))
    fixed = import_event_file(factory, path, RatingScale(), size=4)
    assert (fixed.stored, fixed.duplicates) == (2, 4) and _stored(factory) == 16


def _stored(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Interaction))


def test_a_long_item_file_is_read_whole_then_stored_a_chunk_at_a_time(
    database_url: str, tmp_path: Path
) -> None:
    factory = get_session_factory(database_url)
    path = tmp_path / "items.csv"
    rows = [f"I{i},Item {i},tents\n" for i in range(9)]
    path.write_text("external_id,title,category\n" + "".join(rows[:5]) + "I9\n" + "".join(rows[5:]))
    with pytest.raises(ImportFileError) as caught:  # line 7, in the second chunk of 4
        import_item_file(factory, path, size=4)
    assert caught.value.errors == [(7, "1 values but the header has 3")]
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0

    path.write_text("external_id,title,category\n" + "".join(rows) + "I0,Item 0 renamed,tents\n")
    told: list[tuple[str, float]] = []
    report = import_item_file(factory, path, size=4, progress=lambda *step: told.append(step))
    # Three chunks a pass, each reporting how much of the file has been read.
    assert [phase for phase, _ in told] == ["checking"] * 3 + ["storing"] * 3
    assert told[2][1] == told[-1][1] == 1.0 and 0 < told[0][1] < told[1][1] < 1
    # I0 is created in the first chunk and renamed in the third: the last one wins, and it
    # counts once, as created (nine items are new, none was there to update).
    assert (report.created, report.updated, report.unchanged, len(report.to_embed)) == (9, 0, 0, 9)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 9
        renamed = session.scalar(select(Item.title).where(Item.external_id == "I0"))
    assert renamed == "Item 0 renamed"
    # Again: I0 goes back to its first title in the first chunk and is renamed in the third,
    # one item updated (its text changed twice, embedded once), the other eight unchanged.
    again = import_item_file(factory, path, size=4)
    assert (again.created, again.updated, again.unchanged, len(again.to_embed)) == (0, 1, 8, 1)


def test_lone_carriage_returns_end_lines_as_old_spreadsheet_exports_write_them() -> None:
    first, second = read_items(b"external_id,title\rA1,Tent\rA2,Stove\r", FileFormat.CSV)
    assert (first.external_id, second.title) == ("A1", "Stove")
    row = b'{"user_id": "u", "item_id": "%s", "type": "view"}'
    upload = read_events(row % b"A" + b"\r" + row % b"B" + b"\r\n\r" + b"nope", FileFormat.JSONL)
    assert upload.lines == [1, 2] and upload.errors == [
        (4, "not JSON: Expecting value at column 1")
    ]


def test_every_bad_line_is_counted_and_the_first_fifty_named(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(f"bad line {i}\n" for i in range(60)))
    with pytest.raises(ImportFileError) as caught:
        import_event_file(get_session_factory(database_url), path, RatingScale(), size=7)
    assert len(caught.value.errors) == 50 and caught.value.errors[-1][0] == 50
    assert str(caught.value).startswith("60 bad line(s), nothing imported")


def test_events_without_id_or_time_are_stamped_once_for_the_whole_file(
    database_url: str, tmp_path: Path
) -> None:
    factory = get_session_factory(database_url)
    with session_scope(factory) as session:
        upsert_items(session, [ItemIn(external_id="A", title="Tent")])
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": "u", "item_id": "A", "type": "view"}\n' * 6)
    report = import_event_file(factory, path, RatingScale(), size=2)
    assert (report.stored, report.duplicates) == (1, 5)  # one batch's worth, as a whole file


def test_a_line_wrong_as_a_whole_is_told_so_once() -> None:
    """Not "line 2: line: Value error, ...": the line is named once, pydantic's prefix gone."""
    whole = read_events(b"user_id,item_id,type\nu1,A1,rating\n", FileFormat.CSV)
    assert whole.errors == [(2, "a rating event needs a value")]
