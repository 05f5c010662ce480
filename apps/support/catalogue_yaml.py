"""Reading catalogue YAML: the project's own format, and Rasa NLU with an optional domain.

The files are composed into YAML nodes rather than loaded into Python values, so every value
keeps its line for error messages, duplicate keys are caught (a plain load keeps the last one
silently), and a text such as `yes` stays the text the author wrote instead of becoming `True`.
"""

from __future__ import annotations

import re

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from apps.support.catalogue_records import ErrorList, ExampleRecord, IntentRecord, Mark, shorten

try:
    from yaml.cyaml import CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    CParser = None

_TAG = "tag:yaml.org,2002:"
_TEXT_TAGS = {_TAG + kind for kind in ("str", "int", "float", "bool", "timestamp")}
_NULL = _TAG + "null"
_BOOL = _TAG + "bool"

INTENT_KEYS = ("name", "description", "answer", "handoff", "tags", "owner", "examples")
RASA_INTENT_KEYS = ("intent", "examples", "metadata")
RASA_IGNORED_ITEMS = ("synonym", "regex", "lookup")
# `[Berlin](city)`, `[Berlin](city:DE)`, `[Berlin]{"entity": "city"}`, `[Berlin][{...}, {...}]`
_ENTITY = re.compile(r"\[(?P<text>[^\]]+)\](?:\([^)]*\)|\{[^}]*\}|\[[^\]]*\])")


class _DepthLimit(Composer):
    """The composer with a nesting limit: YAML scanners slow down quadratically with depth,
    and the composer recurses, so a small file of `[[[[...` must stop early."""

    max_depth = 32
    _depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested deeper than {self.max_depth} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


if CParser is not None:

    class _Loader(_DepthLimit, CParser, SafeConstructor, Resolver):
        """libyaml's parser (fast) under the Python composer (which keeps the depth limit)."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # PyYAML built without libyaml: the pure-Python parser, slower

    class _Loader(_DepthLimit, yaml.SafeLoader):  # type: ignore[no-redef]
        pass


class _NodeReader:
    """Typed access to composed YAML nodes; problems go to `errors` with the node's line."""

    def __init__(self, source: str | None, errors: ErrorList) -> None:
        self.source, self.errors = source, errors
        self._seen: set[int] = set()

    def mark(self, node: Node) -> Mark:
        return Mark(node.start_mark.line + 1, self.source)

    def error(self, node: Node, message: str) -> None:
        self.errors.add(self.mark(node), message)

    def compose(self, text: str) -> list[Node]:
        """The documents of `text`; empty ones are dropped. Syntax errors are recorded."""
        try:
            documents = list(yaml.compose_all(text, Loader=_Loader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            context = f" ({exc.context})" if exc.context else ""
            self.errors.add(
                Mark(line, self.source), f"invalid YAML at column {column}: {exc.problem}{context}"
            )
            return []
        except yaml.reader.ReaderError as exc:
            # libyaml counts bytes of the UTF-8 text, the Python reader characters.
            before = text.encode()[: exc.position] if CParser is not None else text[: exc.position]
            line = before.count(b"\n" if isinstance(before, bytes) else "\n") + 1
            self.errors.add(
                Mark(line, self.source),
                f"invalid YAML: the character U+{exc.character:04X} is not allowed; remove it"
                if isinstance(exc.character, int)
                else f"invalid YAML: {exc.reason}",
            )
            return []
        except yaml.YAMLError as exc:
            self.errors.add(Mark(1, self.source), f"invalid YAML: {exc}")
            return []
        except RecursionError:
            self.errors.add(Mark(1, self.source), "invalid YAML: nested too deeply")
            return []
        except UnicodeError:
            self.errors.add(Mark(1, self.source), "the text is not valid Unicode; save it as UTF-8")
            return []
        return [doc for doc in documents if not (doc.tag == _NULL and doc.value == "")]

    def _collection(self, node: Node, what: str) -> bool:
        # An alias repeats a whole list or mapping: refused, so a small file can't expand.
        if id(node) in self._seen:
            self.error(node, f"{what}: YAML aliases (*name) are not supported; write it out")
            return False
        self._seen.add(id(node))
        return True

    def mapping(self, node: Node, what: str) -> dict[str, tuple[ScalarNode, Node]] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping (key: value lines), got {_kind(node)}")
            return None
        if not self._collection(node, what):
            return None
        items: dict[str, tuple[ScalarNode, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or key.tag not in _TEXT_TAGS:
                self.error(key, f"{what}: keys must be plain words, got {_kind(key)}")
                continue
            if key.value in items:
                first = items[key.value][0].start_mark.line + 1
                self.error(key, f"{what}: duplicate key {key.value!r} (first on line {first})")
                continue
            items[key.value] = (key, value)
        return items

    def sequence(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list ('- item' lines), got {_kind(node)}")
            return None
        return list(node.value) if self._collection(node, what) else None

    def text(self, node: Node, what: str) -> str | None:
        """The scalar exactly as written (`yes` stays 'yes'); `None` for null or on error."""
        if isinstance(node, ScalarNode):
            if node.tag == _NULL:
                return None
            if node.tag in _TEXT_TAGS:
                return node.value
            self.error(node, f"{what}: unsupported YAML tag {node.tag!r}; write plain text")
            return None
        self.error(node, f"{what} must be text, got {_kind(node)}")
        return None

    def boolean(self, node: Node, what: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return node.value.lower() in ("true", "yes", "on", "y")
        self.error(node, f"{what} must be true or false, got {_kind(node)}")
        return None

    def text_list(self, node: Node, what: str) -> list[tuple[str, Node]]:
        items = self.sequence(node, what)
        if items is None:
            return []
        texts = []
        for item in items:
            if isinstance(item, ScalarNode) and item.tag == _NULL:  # `- ~`, `- null`, `-`
                self.error(item, f"{what}: an item is empty (quote it if it is text: '~')")
                continue
            text = self.text(item, f"{what} item")
            if text is not None:
                texts.append((text, item))
        return texts

    def unknown_keys(
        self, items: dict[str, tuple[ScalarNode, Node]], valid: tuple[str, ...], what: str
    ) -> None:
        for key, (key_node, _) in items.items():
            if key not in valid:
                self.error(key_node, f"{what}: unknown key {key!r}; valid keys: {', '.join(valid)}")


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "nothing" if node.tag == _NULL else repr(shorten(node.value))


# --- The project's own format -------------------------------------------------------------------


def read_yaml(text: str, source: str | None, errors: ErrorList) -> list[IntentRecord]:
    """Intents from a textsuite catalogue (`version: 1`, `intents:`); see `catalogue_formats`."""
    reader = _NodeReader(source, errors)
    documents = reader.compose(text)
    if not documents:
        if not errors:
            errors.add(Mark(1, source), "empty file; expected `version: 1` and `intents:`")
        return []
    if len(documents) > 1:
        reader.error(documents[1], f"expected one YAML document, found {len(documents)}")
    root = reader.mapping(documents[0], "the catalogue")
    if root is None:
        return []
    if "nlu" in root and "intents" not in root:
        reader.error(documents[0], "this looks like Rasa NLU YAML (it has `nlu:`); use format rasa")
        return []
    reader.unknown_keys(root, ("version", "intents"), "the catalogue")
    if "version" in root:
        version_node = root["version"][1]
        if not (isinstance(version_node, ScalarNode) and version_node.value == "1"):
            reader.error(version_node, f"version must be 1, got {_kind(version_node)}")
    if "intents" not in root:
        reader.error(documents[0], "missing `intents:`, the list of intents")
        return []
    items = reader.sequence(root["intents"][1], "intents")
    records = [_read_intent(reader, item, number) for number, item in enumerate(items or [], 1)]
    return [record for record in records if record is not None]


def _read_intent(reader: _NodeReader, node: Node, number: int) -> IntentRecord | None:
    items = reader.mapping(node, f"intent #{number}")
    if items is None:
        return None
    name_node = items.get("name", (None, None))[1]
    name = reader.text(name_node, f"intent #{number}: name") if name_node is not None else None
    if not name:
        if name_node is None:
            reader.error(node, f"intent #{number} has no `name`")
        elif isinstance(name_node, ScalarNode) and (name == "" or name_node.tag == _NULL):
            reader.error(name_node, f"intent #{number}: the name is empty")
        reader.unknown_keys(items, INTENT_KEYS, f"intent #{number}")
        return None
    what = f"intent {name!r}"
    reader.unknown_keys(items, INTENT_KEYS, what)
    record = IntentRecord(name=name, mark=reader.mark(node))
    for key, (_, value) in items.items():
        record.marks[key] = reader.mark(value)
        if key == "answer":
            record.answer = reader.text(value, f"{what}: answer") or ""
        elif key == "examples":
            for text, item in reader.text_list(value, f"{what}: examples"):
                record.examples.append(ExampleRecord(text, reader.mark(item)))
        else:
            _read_intent_field(reader, record, key, value, what)
    return record


# The fields of an intent besides its name, answer and examples (in a Rasa file: its metadata).
INTENT_FIELDS = ("description", "handoff", "tags", "owner")


def _read_intent_field(
    reader: _NodeReader, record: IntentRecord, key: str, value: Node, what: str
) -> None:
    if key == "description":
        record.description = reader.text(value, f"{what}: description")
    elif key == "owner":
        record.owner = reader.text(value, f"{what}: owner")
    elif key == "handoff":
        record.handoff = bool(reader.boolean(value, f"{what}: handoff"))
    elif key == "tags" and not (isinstance(value, ScalarNode) and value.tag == _NULL):
        record.tags = [text for text, _ in reader.text_list(value, f"{what}: tags")]


# --- Rasa NLU -----------------------------------------------------------------------------------


def read_rasa(
    text: str,
    source: str | None,
    errors: ErrorList,
    *,
    domain: str | None = None,
    domain_source: str | None = None,
) -> list[IntentRecord]:
    """Intents from Rasa NLU YAML; answers from `responses: utter_<intent>` in any document of
    the file or in a separate domain file."""
    reader = _NodeReader(source, errors)
    records: dict[str, IntentRecord] = {}
    responses: dict[str, tuple[str, Mark]] = {}
    found_nlu = False
    documents = reader.compose(text)
    for document in documents:
        root = reader.mapping(document, "a Rasa document")
        if root is None:
            continue
        if "nlu" in root:
            found_nlu = True
            _read_nlu(reader, root["nlu"][1], records)
        if "responses" in root:
            responses.update(_read_responses(reader, root["responses"][1]))
    if domain is not None:
        domain_reader = _NodeReader(domain_source, errors)
        domain_documents = domain_reader.compose(domain)
        roots = [domain_reader.mapping(doc, "the domain") for doc in domain_documents]
        found = [root for root in roots if root is not None and "responses" in root]
        for root in found:
            responses.update(_read_responses(domain_reader, root["responses"][1]))
        if domain_documents and not found and not errors:
            errors.add(Mark(1, domain_source), "the domain file has no `responses:` section")
    if documents and not found_nlu:
        errors.add(
            Mark(1, source),
            'no `nlu:` section: expected Rasa NLU YAML (version: "3.1", nlu: - intent: ...); '
            "for a textsuite catalogue use format yaml",
        )
    elif not documents and not errors:
        errors.add(Mark(1, source), "empty file; expected Rasa NLU YAML with an `nlu:` section")
    for name, record in records.items():
        if f"utter_{name}" in responses:
            record.answer, record.marks["answer"] = responses[f"utter_{name}"]
    return list(records.values())


def _read_nlu(reader: _NodeReader, node: Node, records: dict[str, IntentRecord]) -> None:
    for item in reader.sequence(node, "nlu") or []:
        fields = reader.mapping(item, "an nlu item")
        if fields is None:
            continue
        if "intent" not in fields:
            if not any(kind in fields for kind in RASA_IGNORED_ITEMS):
                reader.error(
                    item,
                    f"unknown nlu item with keys {', '.join(fields)}: expected `- intent:`, "
                    "`- synonym:`, `- regex:` or `- lookup:`",
                )
            continue
        name_node = fields["intent"][1]
        name = reader.text(name_node, "intent name")
        if not name:
            if isinstance(name_node, ScalarNode) and (name == "" or name_node.tag == _NULL):
                reader.error(name_node, "`intent:` needs a name")
            continue
        reader.unknown_keys(fields, RASA_INTENT_KEYS, f"intent {name!r}")
        record = records.setdefault(
            name, IntentRecord(name=name, mark=reader.mark(item), marks={"name": reader.mark(item)})
        )
        # Rasa's free-form metadata may say what textsuite's own format does (`handoff: true`,
        # `tags: [smalltalk]`, `owner`, `description`); anything else in it is left alone.
        metadata = (
            reader.mapping(fields["metadata"][1], f"intent {name!r}: metadata") or {}
            if "metadata" in fields
            else {}
        )
        for key in INTENT_FIELDS:
            if key in metadata:
                record.marks[key] = reader.mark(metadata[key][1])
                _read_intent_field(reader, record, key, metadata[key][1], f"intent {name!r}")
        if "examples" not in fields:
            reader.error(item, f"intent {name!r} has no `examples:`")
            continue
        record.examples.extend(_rasa_examples(reader, fields["examples"][1], name))


def _rasa_examples(reader: _NodeReader, node: Node, intent: str) -> list[ExampleRecord]:
    what = f"intent {intent!r}: examples"
    if isinstance(node, SequenceNode):  # the long form: `- text: ...` with metadata
        examples = []
        for item in reader.sequence(node, what) or []:
            if isinstance(item, ScalarNode):
                text = reader.text(item, what)
                text_node: Node = item
            else:
                fields = reader.mapping(item, f"{what} item") or {}
                reader.unknown_keys(fields, ("text", "metadata"), f"{what} item")
                if "text" not in fields:
                    reader.error(item, f"{what}: an item without `text:`")
                    continue
                text_node = fields["text"][1]
                text = reader.text(text_node, f"{what}: text")
            examples.append(ExampleRecord(_strip_entities(text or ""), reader.mark(text_node)))
        return examples
    block = reader.text(node, what)
    if block is None:
        return []
    # In a literal block (`examples: |`) line i of the value is line i+1 after the `|`; other
    # styles fold lines, so their examples get the line where the value starts.
    first_line = node.start_mark.line + 2 if getattr(node, "style", None) == "|" else None
    examples = []
    for index, line in enumerate(block.split("\n")):
        stripped = line.strip()
        if not stripped:
            continue
        mark = Mark(first_line + index if first_line else node.start_mark.line + 1, reader.source)
        if not stripped.startswith("-"):
            reader.errors.add(
                mark, f"{what}: each line must start with '- ', got {shorten(stripped)!r}"
            )
            continue
        examples.append(ExampleRecord(_strip_entities(stripped[1:].strip()), mark))
    return examples


def _strip_entities(text: str) -> str:
    """`fly to [Berlin](city)` -> `fly to Berlin`: the classifier learns from plain text."""
    return _ENTITY.sub(lambda match: match.group("text"), text)


def _read_responses(reader: _NodeReader, node: Node) -> dict[str, tuple[str, Mark]]:
    """`utter_<intent>` -> the text of its first variant that has one, with its line: of the
    first variant without a `condition` or a `channel` where there is one (Rasa's fallback
    for when no condition holds, on any channel; a conditional or Slack-only one would be
    said to everyone)."""
    found: dict[str, tuple[str, Mark]] = {}
    for name, (_, value) in (reader.mapping(node, "responses") or {}).items():
        if not name.startswith("utter_"):
            continue
        texts: list[tuple[bool, str, Mark]] = []
        for variant in reader.sequence(value, f"response {name!r}") or []:
            fields = reader.mapping(variant, f"response {name!r}")
            if fields and "text" in fields:
                text = reader.text(fields["text"][1], f"response {name!r}: text")
                if text is not None:
                    limited = "condition" in fields or "channel" in fields
                    texts.append((limited, text, reader.mark(fields["text"][1])))
        if texts:
            _, text, mark = min(texts, key=lambda found_text: found_text[0])  # stable: first
            found[name] = (text, mark)
    return found
