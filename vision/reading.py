"""What the text reader returns, and the pure logic around it (no OCR in here).

The reader (``vision/text.py``) turns a frame into a :class:`TextReading`;
everything a user hears from it goes through the helpers here, which are plain
functions so they can be tested without a model:

- :func:`layout` puts detected lines in reading order and says where they
  are (left / centre / right, top / middle / bottom) and which frame edges
  text runs off, so the user can be told which way to move the phone;
- :func:`match_sign` confirms a sign the vision model reported against the
  reader's lines and returns the reader's words, never the model's;
- :func:`is_read_request` recognises "read this" and "go on" (English and
  Mandarin), as typed or as speech-to-text heard them;
- :func:`sentences` cuts the text into sentences the user can stop and continue;
- :func:`fix_confusions` mends a lone digit inside a lower-case word ("Ro0m")
  and a lone letter inside a number ("2l4"), the recogniser's confident misreads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Literal

Box = tuple[float, float, float, float]
"""x0, y0, x1, y1 as fractions of the frame's width and height (0..1)."""

Status = Literal["ok", "none", "blurred", "partial"]

EDGES = ("left", "right", "top", "bottom")


@dataclass(kw_only=True)
class TextLine:
    """One line of text as the reader read it, verbatim.

    ``box`` is in the camera frame's coordinates (what the phone sees), even when
    the page was rotated and read in its own orientation: "left" means the
    left of the picture, the way the user turns the phone.
    """

    text: str
    confidence: float
    box: Box
    horizontal: str = "centre"
    vertical: str = "middle"
    read_as: str | None = None
    """The recogniser's own text when :func:`fix_confusions` changed it, else ``None``."""

    def __repr__(self) -> str:
        return (
            f"TextLine(chars={len(self.text)}, confidence={self.confidence:.2f}, "
            f"at={self.vertical}-{self.horizontal})"
        )


@dataclass(kw_only=True)
class TextReading:
    """All the text in one frame, in the page's reading order.

    ``status`` says what the user should hear:

    - ``"ok"``: every text region was read (``lines`` holds them);
    - ``"none"``: no text in view;
    - ``"blurred"``: text is there but too blurred to read; ``lines`` is empty on
      purpose, a guess is worse than nothing for someone who cannot check;
    - ``"partial"``: some lines were read, other text regions were too blurred.

    ``cut_off`` lists the frame edges text runs off ("left", "right", "top",
    "bottom"): move the phone that way to see the rest.
    ``rotation`` is how far the page was turned in the frame, in degrees
    counter-clockwise (0, 90, 180 or 270); it was read in its own orientation.
    """

    lines: list[TextLine] = field(default_factory=list)
    status: Status = "none"
    cut_off: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    rotation: int = 0
    blurred_regions: int = 0

    @property
    def text(self) -> str:
        """The lines joined with newlines, in reading order."""
        return "\n".join(line.text for line in self.lines)

    def __repr__(self) -> str:
        return (
            f"TextReading(status={self.status!r}, lines={len(self.lines)}, "
            f"chars={sum(len(line.text) for line in self.lines)}, cut_off={self.cut_off}, "
            f"rotation={self.rotation}, latency_ms={self.latency_ms:.0f})"
        )


# --------------------------------------------------------------------------- layout


def _third(centre: float, names: tuple[str, str, str]) -> str:
    if centre < 1 / 3:
        return names[0]
    if centre > 2 / 3:
        return names[2]
    return names[1]


def place(box: Box) -> tuple[str, str]:
    """(horizontal, vertical) names of where a box's centre lies, by thirds of the frame."""
    x0, y0, x1, y1 = box
    return (
        _third((x0 + x1) / 2, ("left", "centre", "right")),
        _third((y0 + y1) / 2, ("top", "middle", "bottom")),
    )


def edges_touched(box: Box, margin: float) -> list[str]:
    """Frame edges the box lies within ``margin`` (a fraction of the frame) of."""
    x0, y0, x1, y1 = box
    touched = []
    if x0 <= margin:
        touched.append("left")
    if x1 >= 1 - margin:
        touched.append("right")
    if y0 <= margin:
        touched.append("top")
    if y1 >= 1 - margin:
        touched.append("bottom")
    return touched


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """Indices of ``boxes`` (in the page's own orientation) in reading order.

    Lines are grouped into rows: a box joins a row when its vertical centre
    falls inside the row's span and they overlap by at least half the smaller
    height; rows go top to bottom, boxes in a row left to right. This keeps
    "Platform 4 | Exit" side by side on one row, and a page's lines in order
    even when the detector returns them slightly tilted.
    """
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3]) / 2)
    rows: list[list[int]] = []
    for i in order:
        _x0, y0, _x1, y1 = boxes[i]
        centre = (y0 + y1) / 2
        placed = False
        for row in rows[-3:]:
            top = min(boxes[j][1] for j in row)
            bottom = max(boxes[j][3] for j in row)
            overlap = min(bottom, y1) - max(top, y0)
            smaller = min(y1 - y0, min(boxes[j][3] - boxes[j][1] for j in row))
            if top <= centre <= bottom and overlap >= 0.5 * smaller:
                row.append(i)
                placed = True
                break
        if not placed:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: boxes[j][0])]


# ------------------------------------------------------------------- normalising

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_RE = re.compile(f"[{_CJK}]")
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, full-width forms folded (NFKC), punctuation dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Words of Latin-script text; single characters of Chinese (which has no spaces)."""
    return _TOKEN_RE.findall(normalise(text))


# ------------------------------------------------------------------ match_sign

_SIGN_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "sign",
        "signs",
        "signboard",
        "board",
        "label",
        "labels",
        "text",
        "texts",
        "writing",
        "written",
        "notice",
        "poster",
        "banner",
        "plaque",
        "placard",
        "says",
        "say",
        "saying",
        "reads",
        "read",
        "reading",
        "that",
        "which",
        "with",
        "of",
        "on",
        "in",
        "it",
        "is",
        "are",
        "there",
        "some",
        "displayed",
        "showing",
        "shows",
        "word",
        "words",
        "letters",
        "printed",
    ]
)
_ZH_FILLER = re.compile(
    r"(一个|一块|牌子|标志|标牌|招牌|指示牌|上面写着|上面写的|写着|文字|写的是)"
)
_QUOTED = re.compile(r"[\"“”「」『』‘’']([^\"“”「」『』‘’']{1,200})[\"“”「」『』‘’']")


def _model_words(model_text: str) -> list[str]:
    """The words a model's report claims the sign says, without "a sign saying" filler."""
    quoted = _QUOTED.findall(model_text)
    source = " ".join(quoted) if quoted else model_text
    source = _ZH_FILLER.sub(" ", source)
    return [t for t in tokens(source) if t not in _SIGN_FILLER]


def _token_found(token: str, window_tokens: list[str], squeezed: str) -> bool:
    if token in window_tokens or (len(token) >= 3 and token in squeezed):
        return True
    if len(token) < 5 or any(c.isdigit() for c in token):
        # Short words and numbers must be exact: "Platform 5" is not "Platform 4".
        return False
    return any(SequenceMatcher(None, token, w).ratio() >= 0.8 for w in window_tokens)


def match_sign(model_text: str, reading: TextReading, *, min_coverage: float = 0.8) -> str | None:
    """The reader's own words for the sign the vision model reported, or ``None``.

    The vision model paraphrases ("an exit sign", ``sign: "Platform 4"``); the
    words spoken must be the reader's. Consecutive lines of the reading (one
    to four) are candidate signs; a candidate confirms the report when at least
    ``min_coverage`` of the report's words (after dropping "sign", "says" and
    such) are in it: exactly for numbers and short words, allowing an OCR slip
    in a long word. Of the confirming candidates the closest (by character
    similarity) is returned, verbatim, its lines joined with spaces (no space
    between Chinese characters).

    ``None`` means the reader cannot confirm the sign (no text, too blurred,
    different words); the caller then says "a sign I can't read" and never the
    model's guess.
    """
    if not reading.lines or reading.status in ("none", "blurred"):
        return None
    wanted = _model_words(model_text)
    if sum(len(w) for w in wanted) < 2:
        return None
    target = "".join(wanted)
    best: tuple[float, str] | None = None
    lines = reading.lines
    for start in range(len(lines)):
        for end in range(start + 1, min(len(lines), start + 4) + 1):
            verbatim = join_lines([line.text for line in lines[start:end]])
            window_tokens = tokens(verbatim)
            squeezed = "".join(window_tokens)
            found = sum(_token_found(w, window_tokens, squeezed) for w in wanted)
            if found / len(wanted) < min_coverage:
                continue
            score = SequenceMatcher(None, target, squeezed).ratio()
            if best is None or score > best[0]:
                best = (score, verbatim)
    return None if best is None else best[1]


# --------------------------------------------------------------- is_read_request

_POLITE_PREFIX = re.compile(
    r"(?:(?:hey|hi|ok|okay|so|um|uh|er|now|and|then|please|kindly|"
    r"(?:can|could|would|will) you(?: please)?|i want you to|i'd like you to|"
    r"i need you to|help me|try to|just)\s+)+"
)
_POLITE_SUFFIX = re.compile(
    r"(?:\s+(?:please|for me|to me|out loud|aloud|now|again|thanks|thank you))+"
)
_OBJECT = (
    r"(?:this|that|it|these|those|here|everything|all|all of it|"
    r"(?:the|this|that|my) (?:sign|text|label|page|menu|letter|words|writing|note|notice|"
    r"screen|board|paper|card|document|package|box|bottle|poster|door|instructions|print))"
)
_READ_EN = re.compile(
    rf"(?:read|reed|red|rede)(?: out)?(?: {_OBJECT})?(?: out)?"
    rf"|what (?:does|do|did) {_OBJECT} say"
    rf"|what(?: is|s|'s) (?:written|printed)(?: (?:here|there|on (?:it|this|that|{_OBJECT})))?"
    rf"|what(?: is|s|'s) (?:on|in) {_OBJECT}"
    rf"|what (?:does|do) (?:it|this|that) read"
    r"|what (?:does|do) the (?:sign|label|text|page|note|notice) (?:say|read)"
    r"|(?:tell me )?what (?:it|this|that|the sign|the label) says"
)
_CONTINUE_EN = re.compile(
    r"(?:go on|continue|continue reading|keep reading|keep going|carry on|read on|"
    r"go ahead|next|next sentence|more|and then|then what|what else|what's next|"
    r"(?:read )?the rest|read more|next line|resume|resume reading|"
    # the words the other languages' "say ... for more" asks for
    r"la suite|continue|continuez|weiter|mehr|sigue|continúa|continua|más)"
)
_ZH_PARTICLES = re.compile(r"[请吧呀啊吗呢嘛哦]|麻烦你?|帮我|给我|能不能|可以|你能|你")
_READ_ZH = re.compile(
    r"(?:读|念|朗读)(?:一下|一读|一念|下)?(?:这个|这些|这里|这|那个|上面的字|上面|标志|牌子|文字|出来|听)*"
    r"|(?:这|这个|这里|那个|牌子|标志|标牌|纸|屏幕)?(?:上面|上)?(?:写|印)(?:的|着|了)?(?:是)?(?:什么|啥)(?:字)?"
    r"|(?:这|这个|牌子|标志|上面)?(?:说|讲)(?:的|了)?(?:是)?(?:什么|啥)"
    r"|(?:这|这个|这些)是什么字"
)
_CONTINUE_ZH = re.compile(
    r"(?:继续|接着|往下|然后)(?:读|念|说)?(?:下去|一下)?|下一句|下一行|还有呢|然后呢|后面呢|接下来呢|接下来"
)


def is_read_request(text: str) -> str | None:
    """``"read"`` for a request to read the text in view, ``"continue"`` for "go on", else None.

    Matches the whole utterance (after folding case, punctuation and polite
    padding such as "could you ... for me"), so "read this" is a request and
    "I read this book yesterday" is not. Tolerates what speech-to-text makes
    of it ("Read this.", "Reed this", "what's written here?") and Mandarin
    ("读一下", "上面写的什么", "继续").
    """
    if not text or len(text) > 200:
        return None
    plain = normalise(text).replace("’", "'")
    if not plain:
        return None
    if _CJK_RE.search(plain):
        zh = _ZH_PARTICLES.sub("", plain.replace(" ", ""))
        if _CONTINUE_ZH.fullmatch(zh):
            return "continue"
        if _READ_ZH.fullmatch(zh):
            return "read"
        return None
    plain = plain.replace("what s ", "whats ").replace("it s ", "its ")
    plain = re.sub(r"\bwhats\b", "what's", plain)
    stripped = _POLITE_SUFFIX.sub("", _POLITE_PREFIX.sub("", plain, count=1))
    stripped = stripped.strip()
    for candidate in (stripped, plain):
        if _CONTINUE_EN.fullmatch(candidate):
            return "continue"
        if _READ_EN.fullmatch(candidate):
            return "read"
    return None


# -------------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(r"[.!?;:…。！？；]['\"”’)\]]*\Z")
_ABBREVIATIONS = frozenset(
    [
        "dr",
        "mr",
        "mrs",
        "ms",
        "st",
        "no",
        "nr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "fig",
        "mt",
        "prof",
        "rd",
        "ave",
        "tel",
        "min",
        "max",
    ]
)
_BOUNDARY = re.compile(
    # Chinese sentence punctuation ends a sentence where it stands;
    r"[。！？；…]+[\"”’)\]」』]*\s*"
    # Latin punctuation needs a space after it, or (OCR drops spaces) a capital
    # right after a lower-case word: "topics.Wherever".
    r"|[.!?;]+[\"”’)\]]*(?:\s+|(?<=[a-z][.!?])(?=[(\"“]?[A-Z]))"
)


def _cjk_boundary(left: str, right: str) -> bool:
    return bool(left and right and _CJK_RE.match(left[-1]) and _CJK_RE.match(right[0]))


def join_lines(lines: Sequence[str]) -> str:
    """Join lines the way they read: a space between words, none between Chinese
    characters, none after a hyphen that breaks a word across lines."""
    out = ""
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if not out:
            out = line
        elif _cjk_boundary(out, line) or (out.endswith("-") and line[:1].islower()):
            out += line
        else:
            out += " " + line
    return out


def _wrapped(line: TextLine, widest: float) -> bool:
    """A line that runs (nearly) the full width of the block was wrapped: its
    sentence goes on in the next line. Short lines (sign lines, headings, the
    last line of a paragraph) end their phrase."""
    width = line.box[2] - line.box[0]
    return width >= 0.7 * widest and not _SENTENCE_END.search(line.text.strip())


def _split_long(sentence: str, max_chars: int) -> list[str]:
    parts: list[str] = []
    while len(sentence) > max_chars:
        cut = max(sentence.rfind(p, 0, max_chars) for p in (", ", "，", "、", " - "))
        if cut <= max_chars // 3:
            cut = sentence.rfind(" ", 0, max_chars)
        if cut <= 0:
            cut = max_chars - 1
        parts.append(sentence[: cut + 1].strip())
        sentence = sentence[cut + 1 :].strip()
    if sentence:
        parts.append(sentence)
    return parts


def split_sentences(text: str, *, max_chars: int = 220) -> list[str]:
    """Split running text on sentence punctuation (English and Chinese), keeping
    abbreviations such as "Dr." whole; sentences longer than ``max_chars`` are
    cut at a comma (or a space) so a stop never loses more than a breath."""
    pieces: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        pieces.append(text[start : m.end()].strip())
        start = m.end()
    pieces.append(text[start:].strip())
    pieces = [p for p in pieces if p]
    merged: list[str] = []
    for piece in pieces:
        if merged:
            last_word = merged[-1].rsplit(" ", 1)[-1].rstrip(".").lower()
            if merged[-1].endswith(".") and (last_word in _ABBREVIATIONS or len(last_word) == 1):
                merged[-1] += " " + piece
                continue
        merged.append(piece)
    return [part for sentence in merged for part in _split_long(sentence, max_chars)]


def sentences(reading: TextReading, *, max_chars: int = 220) -> list[str]:
    """The reading's text as sentences to speak one at a time (stop and "go on").

    Wrapped lines of a paragraph are joined first (a line as wide as the block
    that does not end a sentence continues in the next), so a sentence broken
    across lines is spoken whole; short lines such as a sign's stay phrases of
    their own. Then the text is split on sentence punctuation, Chinese
    included.
    """
    if not reading.lines:
        return []
    widest = max(line.box[2] - line.box[0] for line in reading.lines)
    blocks: list[list[str]] = [[]]
    for line in reading.lines:
        blocks[-1].append(line.text)
        if not _wrapped(line, widest):
            blocks.append([])
    out: list[str] = []
    for block in blocks:
        if block:
            out.extend(split_sentences(join_lines(block), max_chars=max_chars))
    return out


# --------------------------------------------------------- letter/digit confusions

_DIGIT_AS_LETTER = {"0": "o", "1": "l", "5": "s"}
_LETTER_AS_DIGIT = {"O": "0", "o": "0", "l": "1", "I": "1"}
_RUN_RE = re.compile(r"[A-Za-z0-9]+")


def _fix_run(run: str) -> str:
    digits = [i for i, c in enumerate(run) if c.isdigit()]
    letters = len(run) - len(digits)
    if len(digits) == 1 and letters >= 3:
        i = digits[0]
        rest = run[:i] + run[i + 1 :]
        # A word's shape: all lower case, or capitalised; never a code such as "SW1A",
        # "Xk0pqR" (a password on a router label) or "MP3".
        word_shaped = rest[1:].islower()
        if (
            run[i] in _DIGIT_AS_LETTER
            and 0 < i < len(run) - 1
            and word_shaped
            and run[i - 1].isalpha()
            and run[i + 1].islower()
        ):
            return run[:i] + _DIGIT_AS_LETTER[run[i]] + run[i + 1 :]
        return run
    if letters == 1 and len(run) >= 3:
        i = next(i for i, c in enumerate(run) if not c.isdigit())
        if run[i] in _LETTER_AS_DIGIT and 0 < i < len(run) - 1:
            return run[:i] + _LETTER_AS_DIGIT[run[i]] + run[i + 1 :]
    return run


def fix_confusions(text: str) -> str:
    """Mend the recogniser's letter/digit confusions where the context leaves no doubt.

    PP-OCR reads a sharp "Room 214" in a monospaced font as "Ro0m 214" at
    confidence 0.96: no threshold catches it, and a blind user cannot check.
    Two conservative rules, on runs of ASCII letters and digits:

    - one digit 0, 1 or 5 between letters, followed by a lower-case letter,
      in a word of at least three letters that is otherwise all lower case or
      capitalised, becomes o, l or s ("Ro0m" -> "Room", "He1lo" -> "Hello");
    - one letter O, o, l or I between digits, in a run of digits, becomes 0
      or 1 ("2l4" -> "214", "1O5" -> "105").

    Anything else is left as read: codes and capitals ("SW1A", "K0A", "R0OM",
    "MP3", "4th", "B12", "COVID-19") cannot be told from misreads, and a wrong
    "correction" of a code is worse than an honest misread. Chinese is untouched.
    """
    return _RUN_RE.sub(lambda m: _fix_run(m.group()), text)
