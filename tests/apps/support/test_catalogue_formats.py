"""Catalogue files on SQLite and PostgreSQL: YAML, CSV and Rasa import, line-level errors,
all-or-nothing writes, merge and replace, and export round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.support import catalogue
from apps.support.catalogue_formats import (
    CatalogueFileError,
    CatalogueFormat,
    ExportFormat,
    ImportMode,
    detect_format,
    export_catalogue,
    import_catalogue,
    read_catalogue,
)
from apps.support.models import (
    Conversation,
    Example,
    Intent,
    Message,
    MessageRole,
    ReviewItem,
)

DEMO_CATALOGUE = (
    Path(__file__).resolve().parents[3] / "apps" / "support" / "demo" / "catalogue.yaml"
)

SHOP = """\
version: 1
intents:
  - name: order_status
    description: The customer asks where an order is
    answer: "Hi {customer_name|there}! Order {order_id} is on its way."
    tags: [orders]
    owner: support-team
    examples:
      - Where is my order?
      - has my parcel shipped yet
  - name: talk_to_agent
    answer: ""
    handoff: true
    examples:
      - I want to talk to a person
"""

BAD = """\
version: 2
intents:
  - name: Order Status
    answer: "Hello {name"
    handoff: maybe
    colour: red
    examples:
      - where is it
      - ""
      - [a, b]
  - name: refund
    answer: ok
    examples: []
  - name: refund
    examples:
      - Where is it
"""


def snapshot(session: Session) -> dict[str, tuple[object, ...]]:
    return {
        intent.name: (
            intent.answer,
            intent.description,
            intent.handoff,
            tuple(intent.tags),
            intent.owner,
            tuple(sorted(example.text for example in intent.examples)),
        )
        for intent in catalogue.load_catalogue(session)
    }


def errors_of(data: str | bytes, format: CatalogueFormat, **options: object) -> list[str]:
    with pytest.raises(CatalogueFileError) as exc:
        read_catalogue(data, format, **options)  # type: ignore[arg-type]
    return [str(error) for error in exc.value.errors]


def test_yaml_import_creates_the_catalogue(db_session: Session) -> None:
    report = import_catalogue(db_session, SHOP, CatalogueFormat.YAML)
    assert report.created == ["order_status", "talk_to_agent"] and report.examples_added == 3
    assert snapshot(db_session) == {
        "order_status": (
            "Hi {customer_name|there}! Order {order_id} is on its way.",
            "The customer asks where an order is",
            False,
            ("orders",),
            "support-team",
            ("Where is my order?", "has my parcel shipped yet"),
        ),
        "talk_to_agent": ("", None, True, (), None, ("I want to talk to a person",)),
    }


def test_the_demo_catalogue_imports_cleanly(db_session: Session) -> None:
    report = import_catalogue(db_session, DEMO_CATALOGUE.read_bytes(), CatalogueFormat.YAML)
    assert len(report.created) >= 15 and report.examples_added >= 8 * len(report.created)


def test_every_problem_is_reported_by_line_and_nothing_is_written(db_session: Session) -> None:
    import_catalogue(db_session, SHOP, CatalogueFormat.YAML)
    before = snapshot(db_session)
    with pytest.raises(CatalogueFileError) as exc:
        import_catalogue(db_session, BAD, CatalogueFormat.YAML, mode=ImportMode.REPLACE)
    found = [(error.line, error.message) for error in exc.value.errors]
    assert found == [
        (1, "version must be 1, got '2'"),
        (
            3,
            "intent 'Order Status': name must match ^[a-z0-9][a-z0-9_.-]{0,99}$ (lower-case "
            "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 100 "
            "characters); try 'order_status'",
        ),
        (
            4,
            "intent 'Order Status': answer template: unmatched '{' at character 7; write {{ or }} "
            "for a literal brace",
        ),
        (5, "intent 'Order Status': handoff must be true or false, got 'maybe'"),
        (
            6,
            "intent 'Order Status': unknown key 'colour'; valid keys: name, description, answer, "
            "handoff, tags, owner, examples",
        ),
        (9, "intent 'Order Status': example is empty"),
        (10, "intent 'Order Status': examples item must be text, got a list"),
        (13, "intent 'refund': no examples; give at least one example utterance"),
        (14, "duplicate intent 'refund' (first defined on line 11); merge the two or rename one"),
        (
            16,
            "intent 'refund': example 'Where is it' is also an example of intent 'Order Status' "
            "(line 8); an utterance can teach only one intent",
        ),
    ]
    assert "nothing was written: 10 problems" in str(exc.value)
    assert snapshot(db_session) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "intents:\n  - name: a\n    examples: [x]\n  - name: b: c\n",
            "line 4: invalid YAML at column 12: mapping values are not allowed",
        ),
        ("intents: {a: 1}\n", "line 1: intents must be a list"),
        ("intents:\n  - name: a\n    name: b\n    examples: [x]\n", "line 3: intent #1: dupl"),
        (
            "intents:\n  - name: a\n    tags: orders\n    examples: [x]\n",
            "line 3: intent 'a': tags",
        ),
        ("intents:\n  - answer: hi\n    examples: [x]\n", "line 2: intent #1 has no `name`"),
        (
            "intents:\n  - name: a\n    answer: !!binary aGk=\n    examples: [x]\n",
            "line 3: intent 'a': answer: unsup",
        ),
        ("version: 1\n", "line 1: missing `intents:`"),
        ("intents:\n  - name:\n    examples: [x]\n", "line 2: intent #1: the name is empty"),
        ("intents:\n  - name: ''\n    examples: [x]\n", "line 2: intent #1: the name is empty"),
        (
            "intents:\n  - name: a\n    examples: &x [hi]\n  - name: b\n    examples: *x\n",
            "line 3: intent 'b': examples: YAML aliases (*name) are not supported",
        ),
        ('nlu:\n- intent: a\n  examples: "- x"\n', "line 1: this looks like Rasa NLU YAML"),
        ("intents: []\n", "line 1: the file has no intents"),
        ("intents: []\n---\nintents: []\n", "line 3: expected one YAML document, found 2"),
        ("intents:\n  - name: a\n    examples: [x]\n    tags: [a|b]\n", "line 4: intent 'a'"),
        (
            "intents:\n  - name: a\n    examples:\n      - hi\n      - ~\n      -\n",
            "line 5: intent 'a': examples: an item is empty",
        ),
    ],
    ids=lambda value: value.split("\n")[0][:30] if isinstance(value, str) else None,
)
def test_yaml_structure_errors(text: str, expected: str) -> None:
    assert any(error.startswith(expected) for error in errors_of(text, CatalogueFormat.YAML))


def test_yaml_keeps_texts_as_written() -> None:
    (record,) = read_catalogue(
        "intents:\n  - name: confirm\n    examples: [yes, no, 12, 2024-01-01, 'null']\n",
        CatalogueFormat.YAML,
    )
    assert [example.text for example in record.examples] == [
        "yes",
        "no",
        "12",
        "2024-01-01",
        "null",
    ]


def test_merge_upserts_and_replace_rewrites(db_session: Session) -> None:
    import_catalogue(db_session, SHOP, CatalogueFormat.YAML)
    catalogue.create_intent(db_session, "refund", answer="Sure.", examples=["money back"])
    update = """\
intents:
  - name: order_status
    answer: "Order {order_id|your order} ships today."
    examples:
      - where is my ORDER?
      - when does it arrive
  - name: greeting
    answer: Hello!
    examples: [hi, hello, HI]
"""
    merged = import_catalogue(db_session, update, CatalogueFormat.YAML, mode=ImportMode.MERGE)
    assert (merged.created, merged.updated, merged.deleted) == (["greeting"], ["order_status"], [])
    assert (merged.examples_added, merged.examples_skipped) == (3, 2)
    state = snapshot(db_session)
    assert set(state) == {"greeting", "order_status", "refund", "talk_to_agent"}
    # Merge keeps what the file leaves out: the owner, the tags, the other examples.
    assert state["order_status"][0] == "Order {order_id|your order} ships today."
    assert state["order_status"][3:] == (
        ("orders",),
        "support-team",
        ("Where is my order?", "has my parcel shipped yet", "when does it arrive"),
    )

    again = import_catalogue(db_session, update, CatalogueFormat.YAML, mode=ImportMode.MERGE)
    assert (again.updated, again.examples_added) == ([], 0)
    assert again.unchanged == ["order_status", "greeting"]

    replaced = import_catalogue(db_session, update, CatalogueFormat.YAML, mode=ImportMode.REPLACE)
    assert replaced.deleted == ["refund", "talk_to_agent"]
    assert replaced.examples_removed == 1
    state = snapshot(db_session)
    assert state["order_status"] == (
        "Order {order_id|your order} ships today.",
        None,
        False,
        (),
        None,
        ("Where is my order?", "when does it arrive"),
    )
    assert set(state) == {"greeting", "order_status"}
    assert db_session.scalar(select(func.count()).select_from(Example)) == 4


def test_merge_refuses_an_example_that_teaches_another_intent(db_session: Session) -> None:
    import_catalogue(db_session, SHOP, CatalogueFormat.YAML)
    other = "intents:\n  - name: tracking\n    examples:\n      - ok\n      - where is my order?\n"
    with pytest.raises(CatalogueFileError) as exc:
        import_catalogue(db_session, other, CatalogueFormat.YAML)
    assert [str(error) for error in exc.value.errors] == [
        "line 5: intent 'tracking': example 'where is my order?' already teaches intent "
        "'order_status' in the catalogue; remove it there first, or import with mode replace"
    ]
    # A file with problems of its own hears of those and the conflicts in one round.
    broken = other + "  - name: returns\n    examples: []\n"
    with pytest.raises(CatalogueFileError) as exc:
        import_catalogue(db_session, broken, CatalogueFormat.YAML)
    assert [error.line for error in exc.value.errors] == [5, 7]  # the conflict, no examples
    assert "already teaches" in str(exc.value.errors[0])
    replaced = import_catalogue(db_session, other, CatalogueFormat.YAML, mode=ImportMode.REPLACE)
    assert replaced.created == ["tracking"]


def test_replace_unlabels_review_items_of_deleted_intents(db_session: Session) -> None:
    import_catalogue(db_session, SHOP, CatalogueFormat.YAML)
    conversation = Conversation(channel="api", external_id="c-1")
    db_session.add(conversation)
    db_session.flush()
    message = Message(conversation_id=conversation.id, role=MessageRole.CUSTOMER, text="human!")
    db_session.add(message)
    db_session.flush()
    agent = catalogue.get_intent(db_session, "talk_to_agent")
    item = ReviewItem(message_id=message.id, reason="low_confidence", label_intent_id=agent.id)
    db_session.add(item)
    db_session.flush()

    only_orders = "intents:\n  - name: order_status\n    examples: [where is my order]\n"
    import_catalogue(db_session, only_orders, CatalogueFormat.YAML, mode=ImportMode.REPLACE)
    db_session.refresh(item)
    assert item.label_intent_id is None
    assert list(snapshot(db_session)) == ["order_status"]


TRICKY = """\
version: 1
intents:
  - name: multi.line-intent_2
    description: |
      Two lines,
      with "quotes", commas and a | pipe
    answer: "Line one {customer_name|there},\\nline two: {{literal}} braces."
    handoff: true
    tags: [a tag, émoji 🎉]
    owner: Ops, EU
    examples:
      - 'yes'
      - '- starts with a dash'
      - 'say "hi", then: leave'
      - ünïcödé text
  - name: plain
    answer: ""
    examples:
      - '=SUM(A1:A2) looks like a formula'
"""


@pytest.mark.parametrize("format", list(ExportFormat))
def test_export_then_import_into_an_empty_catalogue_round_trips(
    db_session: Session, format: ExportFormat
) -> None:
    import_catalogue(db_session, TRICKY, CatalogueFormat.YAML)
    import_catalogue(db_session, SHOP, CatalogueFormat.YAML)
    before = snapshot(db_session)
    exported = export_catalogue(db_session, format)
    if format is ExportFormat.CSV:  # a spreadsheet opening it runs no formula a customer wrote
        assert ",'=SUM(A1:A2) looks like a formula," in exported
        assert "'- starts with a dash" in exported
    for name in list(before):
        catalogue.delete_intent(db_session, name)
    assert snapshot(db_session) == {}

    report = import_catalogue(db_session, exported, CatalogueFormat(format.value))
    assert sorted(report.created) == sorted(before)
    assert snapshot(db_session) == before
    assert export_catalogue(db_session, format) == exported


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_import_with_optional_columns(db_session: Session) -> None:
    text = (
        "intent,text,answer,handoff,tags,owner,description\r\n"
        'refund,"I want my money back","Sure, {customer_name|friend}.",no,billing|money,ops,\r\n'
        "refund,refund please,,,,,\r\n"
        "\r\n"
        'agent,"a person,\nplease",,yes,,,\r\n'
    )
    report = import_catalogue(db_session, text, CatalogueFormat.CSV)
    assert report.created == ["refund", "agent"]
    assert snapshot(db_session) == {
        "agent": ("", None, True, (), None, ("a person, please",)),
        "refund": (
            "Sure, {customer_name|friend}.",
            None,
            False,
            ("billing", "money"),
            "ops",
            ("I want my money back", "refund please"),
        ),
    }


def test_csv_errors_name_the_row_line() -> None:
    text = (
        "intent,text,answer,handoff\n"
        "refund,I want my money back,Sure {x},false\n"
        'refund,"refund\nplease",Other,\n'
        "refund, ,,\n"
        ",orphan,,\n"
        "other,hi,,perhaps\n"
        "x,a,b,c,d\n"
        "Bad Name,hello,,\n"
    )
    assert errors_of(text, CatalogueFormat.CSV) == [
        "line 3: intent 'refund': answer differs from line 2 ('Sure {x}' there, 'Other' here); "
        "give the same value on every row of an intent, or leave it empty after the first",
        "line 5: intent 'refund': example is empty",
        "line 6: the row has no intent; fill the 'intent' column",
        "line 7: handoff must be true or false, got 'perhaps'",
        'line 8: the row has 5 values but the header has 4 columns; put "quotes" around a '
        "value that contains a comma",
        "line 9: intent 'Bad Name': name must match ^[a-z0-9][a-z0-9_.-]{0,99}$ (lower-case "
        "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 100 "
        "characters); try 'bad_name'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "line 1: empty file; expected a header row"),
        ("intent,answer\na,b\n", "line 1: bad header: missing column 'text'"),
        ("intent,text,colour\n", "line 1: bad header: unknown column 'colour'"),
        ("intent;text\na;b\n", "(columns must be separated by commas)"),
        ("intent,text,text\n", "column 'text' appears twice"),
        ("intent,text\n", "line 1: the file has no intents"),
    ],
)
def test_csv_header_errors(text: str, expected: str) -> None:
    assert any(expected in error for error in errors_of(text, CatalogueFormat.CSV))


# --- Rasa ----------------------------------------------------------------------------------------

RASA_NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey
    - hello from [Berlin](city)
    - hi, I'm in [Paris]{"entity": "city", "role": "home"}

- synonym: savings
  examples: |
    - pink pig
- regex: account_number
  examples: |
    - \\d{10,12}
- lookup: city
  examples: |
    - London
- intent: goodbye
  metadata:
    sentiment: neutral
  examples:
  - text: |
      bye
    metadata: {a: 1}
  - text: see you [tomorrow](date:2024-01-02)
- intent: greet
  examples: |
    - good morning
"""

RASA_DOMAIN = """\
version: "3.1"
intents:
  - greet
  - goodbye
responses:
  utter_greet:
  - text: "Hi from the web widget!"
    channel: web
  - text: "Hey {customer_name|there}! How can I help?"
  utter_unrelated:
  - text: "never used"
"""


def test_rasa_import_with_a_domain_file(db_session: Session) -> None:
    report = import_catalogue(
        db_session,
        RASA_NLU,
        CatalogueFormat.RASA,
        domain=RASA_DOMAIN,
        source="nlu.yml",
        domain_source="domain.yml",
    )
    assert report.created == ["greet", "goodbye"]
    state = snapshot(db_session)
    assert state["greet"][0] == "Hey {customer_name|there}! How can I help?"
    assert state["greet"][5] == (
        "good morning",
        "hello from Berlin",
        "hey",
        "hi, I'm in Paris",
    )
    # No `utter_goodbye`: an empty answer, so the bot hands off with reason `no_answer`.
    assert state["goodbye"][0] == "" and state["goodbye"][5] == ("bye", "see you tomorrow")


def test_rasa_responses_may_follow_in_a_second_document(db_session: Session) -> None:
    text = RASA_NLU + "---\nresponses:\n  utter_goodbye:\n  - text: Bye {customer_name}!\n"
    import_catalogue(db_session, text, CatalogueFormat.RASA)
    assert snapshot(db_session)["goodbye"][0] == "Bye {customer_name}!"


def test_rasa_conditional_responses_give_way_to_the_plain_one(db_session: Session) -> None:
    text = RASA_NLU + (
        "---\nresponses:\n  utter_goodbye:\n"
        "  - condition:\n    - type: slot\n      name: logged_in\n      value: true\n"
        '    text: "Bye {name}, see you next time"\n'
        "  - text: Bye!\n"
    )
    import_catalogue(db_session, text, CatalogueFormat.RASA)
    # The conditional one would greet everyone by a name the bot never has.
    assert snapshot(db_session)["goodbye"][0] == "Bye!"


def test_rasa_intent_metadata_may_mark_handoff_and_tags(db_session: Session) -> None:
    nlu = (
        'version: "3.1"\nnlu:\n- intent: human_handoff\n  metadata:\n    handoff: true\n'
        "    owner: support-leads\n    team_note: kept out\n  examples: |\n    - a person please\n"
        "    - let me talk to someone\n- intent: thanks\n  metadata:\n    tags: [smalltalk]\n"
        "  examples: |\n    - thanks\n    - thank you\n"
    )
    import_catalogue(db_session, nlu, CatalogueFormat.RASA)
    intents = {i.name: i for i in db_session.scalars(select(Intent))}
    assert intents["human_handoff"].handoff is True
    assert intents["human_handoff"].owner == "support-leads"
    assert intents["thanks"].tags == ["smalltalk"] and intents["thanks"].handoff is False
    bad = nlu.replace("handoff: true", "handoff: perhaps")
    assert errors_of(bad, CatalogueFormat.RASA) == [
        "line 5: intent 'human_handoff': handoff must be true or false, got 'perhaps'"
    ]


def test_rasa_channel_responses_give_way_to_the_plain_one(db_session: Session) -> None:
    text = RASA_NLU + (
        "---\nresponses:\n  utter_goodbye:\n"
        '  - channel: slack\n    text: "*Bye* :wave:"\n'
        "  - text: Bye!\n"
    )
    import_catalogue(db_session, text, CatalogueFormat.RASA)
    assert snapshot(db_session)["goodbye"][0] == "Bye!"  # Slack markup only on Slack


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'intent,text,answer\nw_one,hello,Hi!\nw_one,"my 21 inch monitor broke\n'
            "w_two,where is it now,Here.\nw_three,and now,There.\n",
            "line 3: invalid CSV: unexpected end of data",
        ),
        (
            'intent,text,answer\nw_one,hello,Hi!\nw_one,"my 21" monitor broke,Hi!\n',
            "line 3: invalid CSV: ',' expected after '\"'",
        ),
    ],
    ids=["quote-left-open", "quote-inside-a-value"],
)
def test_a_csv_quote_out_of_place_refuses_the_file(text: str, expected: str) -> None:
    assert errors_of(text, CatalogueFormat.CSV) == [expected]


def test_rasa_errors_have_lines_in_the_right_file() -> None:
    nlu = """\
version: "3.1"
nlu:
- intent: Greet Me
  examples: |
    - hey
    hello without a dash
- intent: bye
  exmaples: |
    - bye
- something: else
"""
    domain = 'responses:\n  utter_bye:\n  - text: "Bye {Name}"\n'
    errors = errors_of(
        nlu, CatalogueFormat.RASA, domain=domain, source="nlu.yml", domain_source="domain.yml"
    )
    assert errors[0].startswith("domain.yml: line 3: intent 'bye': answer template: bad slot")
    assert errors[1:] == [
        "nlu.yml: line 3: intent 'Greet Me': name must match ^[a-z0-9][a-z0-9_.-]{0,99}$ "
        "(lower-case letters, digits, '_', '.' and '-', starting with a letter or digit, at most "
        "100 characters); try 'greet_me'",
        "nlu.yml: line 6: intent 'Greet Me': examples: each line must start with '- ', got "
        "'hello without a dash'",
        "nlu.yml: line 7: intent 'bye' has no `examples:`",
        "nlu.yml: line 7: intent 'bye': no examples; give at least one example utterance",
        "nlu.yml: line 8: intent 'bye': unknown key 'exmaples'; valid keys: intent, examples, "
        "metadata",
        "nlu.yml: line 10: unknown nlu item with keys something: expected `- intent:`, "
        "`- synonym:`, `- regex:` or `- lookup:`",
    ]


def test_rasa_needs_an_nlu_section_and_a_domain_needs_responses() -> None:
    assert errors_of(SHOP, CatalogueFormat.RASA)[0].startswith("line 1: no `nlu:` section")
    domain_errors = errors_of(RASA_NLU, CatalogueFormat.RASA, domain="version: '3.1'\n")
    assert domain_errors == ["line 1: the domain file has no `responses:` section"]


# --- Any input ------------------------------------------------------------------------------------

JUNK = [
    b"",
    b"\xff\xfe\x00\x01binary",
    b"\x00\x01\x02",
    b"[" * 5000,
    b"{" * 5000 + b"}" * 5000,
    b"a: [",
    b"- a\n- b\n",
    b"just text",
    b"intents: 42",
    b"nlu: 42",
    b"nlu:\n- 42\n- intent: [a]\n- intent:\n",
    b'"unterminated',
    b'intent,text\n"a,b\n',
    "intents:\n  - name: a\n    examples: [\ud800]\n".encode("utf-8", "surrogatepass"),
]


@pytest.mark.parametrize("format", list(CatalogueFormat))
@pytest.mark.parametrize("data", JUNK, ids=range(len(JUNK)))
def test_junk_is_refused_with_line_errors(data: bytes, format: CatalogueFormat) -> None:
    errors = errors_of(data, format)
    assert errors and all(error.startswith("line ") for error in errors)


def test_domain_goes_only_with_rasa() -> None:
    with pytest.raises(catalogue.InvalidValue, match="domain file only goes with format rasa"):
        read_catalogue(SHOP, CatalogueFormat.YAML, domain=RASA_DOMAIN)


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (SHOP, "shop.yaml", CatalogueFormat.YAML),
        (SHOP, None, CatalogueFormat.YAML),
        (RASA_NLU, "nlu.yml", CatalogueFormat.RASA),
        (b"intent,text\na,b\n", "x.CSV", CatalogueFormat.CSV),
        (b"intent,text\na,b\n", None, CatalogueFormat.CSV),
        (b"hello", "notes.txt", None),
    ],
)
def test_detect_format(data: str | bytes, filename: str | None, expected: object) -> None:
    assert detect_format(data, filename) is expected
