"""What the model said about a frame, and how its text becomes an ``Observation``.

The model is asked for compact JSON (schema in ``vision/prompts.py``), but
models do not always comply: the parser accepts JSON inside code fences or
followed by chatter, repairs minor damage (trailing commas, single quotes,
Python literals, unclosed brackets at a cut-off), and otherwise falls back to
plain text. Output that is empty or garbled becomes an empty observation with
a reason: the product says nothing rather than inventing.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

URGENCIES = ("low", "normal", "high")
MAX_HAZARDS = 5
MAX_SIGNS = 5
MAX_FIELD_CHARS = 200


@dataclass(kw_only=True)
class Hazard:
    """An obstacle in the walking path."""

    label: str
    direction: str = ""
    distance_m: float | None = None
    urgency: str = "normal"


@dataclass(kw_only=True)
class Observation:
    """The vision engine's result for one frame.

    Attributes:
        hazards: Obstacles, most urgent first.
        signs: Text read verbatim from signs and labels.
        scene: One short sentence about the scene.
        answer: The answer to the user's question, when one was asked.
        raw: The model's text, for logs and debugging (never spoken as is).
        parsed_as: ``json``, ``repaired-json``, ``text`` or ``none``.
        empty_reason: Why nothing usable came out (``empty``, ``garbled``,
            ``timeout``, ``model-failed``); ``None`` when something did.
        partial: Generation stopped at the deadline or on cancel.
    """

    hazards: list[Hazard] = field(default_factory=list)
    signs: list[str] = field(default_factory=list)
    scene: str = ""
    answer: str | None = None
    raw: str = ""
    parsed_as: str = "none"
    empty_reason: str | None = None
    partial: bool = False

    @property
    def empty(self) -> bool:
        return not (self.hazards or self.signs or self.scene or self.answer)

    def __repr__(self) -> str:
        return (
            f"Observation(hazards={[h.label for h in self.hazards]}, signs={len(self.signs)}, "
            f"scene={len(self.scene)} chars, answer={self.answer is not None}, "
            f"parsed_as={self.parsed_as}, empty_reason={self.empty_reason}, partial={self.partial})"
        )


# --- parsing ------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def parse_model_output(text: str, *, question: bool = False, partial: bool = False) -> Observation:
    """Turn model text into an Observation; see the module docstring."""
    raw = text
    stripped = text.strip()
    if not stripped:
        return Observation(raw=raw, empty_reason="empty", partial=partial)
    doc, how = _extract_json(stripped)
    if isinstance(doc, dict):
        obs = _from_json(doc, question=question)
        obs.raw, obs.parsed_as, obs.partial = raw, how, partial
        if obs.empty:
            obs.empty_reason = "empty"
        return obs
    if how == "json-like":
        # It tried to be JSON and failed beyond repair: do not read JSON syntax aloud.
        return Observation(raw=raw, empty_reason="garbled", partial=partial)
    prose = _clean_prose(stripped)
    if not prose:
        return Observation(raw=raw, empty_reason="garbled", partial=partial)
    if question:
        return Observation(answer=prose, raw=raw, parsed_as="text", partial=partial)
    return Observation(scene=prose, raw=raw, parsed_as="text", partial=partial)


def complete_hazards(prefix: str) -> list[Hazard]:
    """Hazards already complete in a still-streaming JSON answer.

    Lets the first warning be spoken before generation ends: each ``{...}``
    object closed inside the ``"hazards": [`` array is parsed on its own.
    """
    start = prefix.find('"hazards"')
    if start < 0:
        return []
    bracket = prefix.find("[", start)
    if bracket < 0:
        return []
    hazards: list[Hazard] = []
    depth, obj_start = 0, -1
    for i, ch in _outside_strings(prefix, bracket + 1):
        if ch == "{":
            depth += 1
            if depth == 1:
                obj_start = i
        elif ch == "}":
            depth -= 1
            if depth == 0 and obj_start >= 0:
                hazard = _hazard(_loads_lenient(prefix[obj_start : i + 1]))
                if hazard is not None:
                    hazards.append(hazard)
        elif ch == "]" and depth == 0:
            break
    return hazards[:MAX_HAZARDS]


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, character) of JSON text outside strings, escapes handled; the quotes that
    open and close each string are yielded too, so a caller can tell where one began."""
    in_str = escape = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str and escape:
            escape = False
        elif in_str and ch == "\\":
            escape = True
        elif ch == '"':
            in_str = not in_str
            yield i, ch
        elif not in_str:
            yield i, ch


def _extract_json(text: str) -> tuple[object, str]:
    fenced = _FENCE.search(text)
    candidate = fenced.group(1).strip() if fenced else text
    first = candidate.find("{")
    if first < 0:
        return None, "none"
    body = _balanced(candidate[first:])
    complete = body == candidate[first:][: len(body)]
    try:
        return json.loads(body), "json" if complete else "repaired-json"
    except (ValueError, RecursionError):
        pass
    repaired = _loads_lenient(body)
    if repaired is not None:
        return repaired, "repaired-json"
    return None, "json-like" if first < 3 else "none"


def _balanced(text: str) -> str:
    """The first complete JSON object in ``text``, or what was complete of it, closed off.

    A string cut off by the deadline is dropped, not closed: half a sign
    ("NO ENT") read aloud would be wrong.
    """
    stack: list[str] = []
    in_str, str_start = False, 0
    for i, ch in _outside_strings(text):
        if ch == '"':
            in_str = not in_str
            str_start = i
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack:
                stack.pop()
            if not stack:
                return text[: i + 1]
    if in_str:
        text = text[:str_start]
    text = re.sub(r'(,\s*)?"[^"]*"\s*:\s*$', "", text.rstrip())  # a key left without value
    return text.rstrip().rstrip(",") + "".join(reversed(stack))


def _loads_lenient(text: str) -> dict[str, object] | None:
    fixed = text
    fixed = re.sub(r",\s*([}\]])", r"\1", fixed)  # trailing commas
    fixed = re.sub(r"\bNone\b", "null", fixed)
    fixed = re.sub(r"\bTrue\b", "true", fixed)
    fixed = re.sub(r"\bFalse\b", "false", fixed)
    if "'" in fixed and '"' not in fixed:
        fixed = fixed.replace("'", '"')
    fixed = re.sub(r"([{,]\s*)([A-Za-z_]+)(\s*:)", r'\1"\2"\3', fixed)  # unquoted keys
    for attempt in (fixed, _balanced(fixed)):
        try:
            doc = json.loads(attempt)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            return doc
    return None


def _from_json(doc: dict[str, object], *, question: bool) -> Observation:
    hazards = []
    for item in _as_list(doc.get("hazards")):
        hazard = _hazard(item)
        if hazard is not None:
            hazards.append(hazard)
    order = {"high": 0, "normal": 1, "low": 2}
    hazards.sort(key=lambda h: order.get(h.urgency, 1))
    signs = []
    for item in _as_list(doc.get("signs") or doc.get("text")):
        value = item.get("text") if isinstance(item, dict) else item
        sign = _short(value) if isinstance(value, str) else ""  # a bare number is no sign
        if sign and sign not in signs:
            signs.append(sign)
    answer = _short(doc.get("answer"), limit=400) if question else None
    return Observation(
        hazards=hazards[:MAX_HAZARDS],
        signs=signs[:MAX_SIGNS],
        scene=_short(doc.get("scene") or doc.get("description"), limit=300),
        answer=answer or None,
    )


def _hazard(item: object) -> Hazard | None:
    if isinstance(item, str):
        label = _short(item)
        return Hazard(label=label) if label else None
    if not isinstance(item, dict):
        return None
    label = _short(item.get("label") or item.get("object") or item.get("what"))
    if not label:
        return None
    urgency = str(item.get("urgency") or "normal").lower().strip()
    return Hazard(
        label=label,
        direction=_short(item.get("direction") or item.get("where")),
        distance_m=_distance(item.get("distance_m", item.get("distance"))),
        urgency=urgency if urgency in URGENCIES else "normal",
    )


def _distance(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (m := _NUMBER.search(value)):
        number = float(m.group().replace(",", "."))
        if "step" in value.lower():
            number *= 0.7  # one walking step is about 0.7 m
    else:
        return None
    return round(number, 1) if 0 <= number <= 100 else None


def _as_list(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    if value in (None, "", {}):
        return []
    return [value]


def _short(value: object, *, limit: int = MAX_FIELD_CHARS) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return ""
    text = " ".join(str(value).split())
    return text[:limit].strip()


def _clean_prose(text: str) -> str:
    """Readable prose from free text, or "" when it looks like noise."""
    if "\ufffd" in text or re.search(r"(.)\1{7,}", text):
        return ""  # broken UTF-8 from the tokenizer, or a model stuck on one character
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\n\t")
    text = " ".join(text.split())
    if not text:
        return ""
    letters = sum(ch.isalpha() for ch in text)
    if letters < 4 or letters / len(text) < 0.6:
        return ""
    words = re.findall(r"\w+", text)
    if words and sum(len(w) for w in words) / len(words) > 14:
        return ""  # no language has words this long on average
    cjk = sum(1 for ch in text if unicodedata.east_asian_width(ch) == "W")
    if cjk < 4 and (len(words) < 2 or len(set(w.lower() for w in words)) / len(words) < 0.5):
        return ""  # "cross cross cross": a model stuck in a loop
    return text[:400]
