"""The companion's judgement: what to say, in which order, and what not to repeat.

Plain logic, no sockets or threads: feed it observations (with the time their
frame arrived) and take utterances out. Times are ``time.monotonic`` seconds,
passed in, so tests can script them.

Lanes, highest first: hazard warning, answer to the user's question, sign or
text, scene description. ``next()`` always returns the highest lane waiting.
A new hazard while something lower is being spoken asks for barge-in
(``preempts``); an answer cut short that way is said again afterwards.

Not repeating itself: every spoken item leaves a memory keyed by identity
(a hazard's label and side; a sign's normalised text; "scene"). An item is
said again only when it changed (a hazard came closer by a third or 0.5 m,
changed side or became more urgent; a description's words differ by more
than 40%) or after ``repeat_after_s``. Dedup never hides a hazard that got
worse, and an urgent hazard still in the path is repeated every
``urgent_repeat_s``.

Frame-age budget: nothing about a frame older than the budget is spoken;
a warning that went stale while it waited is dropped and counted. Answers
are exempt: the user asked and waits for them.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from protocol import HazardInfo, ObservationMsg
from server.settings import UserSettings


class Lane(IntEnum):
    """Priority of an utterance; lower value is spoken first."""

    HAZARD = 0
    ANSWER = 1
    SIGN = 2
    SCENE = 3

    @property
    def wire(self) -> str:
        return {0: "hazard", 1: "answer", 2: "sign", 3: "scene"}[self.value]


@dataclass(kw_only=True)
class Utterance:
    """One thing to say."""

    id: str
    lane: Lane
    text: str
    key: str
    frame_time: float | None = None
    """When the frame it is about arrived (monotonic); None for answers not tied to a frame."""


@dataclass
class NarratorStats:
    spoken: int = 0
    deduplicated: int = 0
    stale_dropped: int = 0
    filtered: int = 0
    interrupted: int = 0


@dataclass
class _Memory:
    said_at: float
    text: str
    distance: float | None = None
    urgency: str = "normal"


PHRASES = {
    "en": {
        "unsure": "I'm not sure.",
        "no_vision": "Vision is unavailable right now.",
        "not_heard": "Sorry, I didn't catch that.",
        "sign": "Sign: {text}",
        "metre": "one metre",
        "metres": "{d} metres",
    },
    "zh": {
        "unsure": "我不确定。",
        "no_vision": "现在无法使用视觉功能。",
        "not_heard": "抱歉，我没听清。",
        "sign": "标志：{text}",
        "metre": "一米",
        "metres": "{d}米",
    },
}

CATEGORY_WORDS = {
    "steps": ("step", "stair", "kerb", "curb", "drop", "ledge", "escalator", "台阶", "楼梯"),
    "vehicles": (
        "car",
        "bike",
        "bicycle",
        "bus",
        "truck",
        "scooter",
        "vehicle",
        "motorbike",
        "tram",
        "车",
    ),
    "people": ("person", "people", "man", "woman", "child", "pedestrian", "dog", "人"),
    "doors": ("door", "gate", "门"),
    "surface": ("wet", "puddle", "ice", "hole", "uneven", "crack", "grate"),
}


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def similar(a: str, b: str, threshold: float) -> bool:
    """Word-set Jaccard similarity of normalised texts (characters for CJK)."""
    wa, wb = _tokens(a), _tokens(b)
    if not wa or not wb:
        return wa == wb
    return len(wa & wb) / len(wa | wb) >= threshold


def _tokens(text: str) -> set[str]:
    norm = normalise(text)
    if re.search(r"[\u4e00-\u9fff]", norm):
        return set(norm.replace(" ", ""))
    return set(norm.split())


def side_of(direction: str) -> str:
    """left / ahead / right bucket of a direction (clock positions included)."""
    d = direction.lower()
    m = re.search(r"(\d{1,2})\s*o'?\s*clock", d)
    if m:
        hour = int(m.group(1)) % 12
        return "ahead" if hour in (11, 0, 1) else "right" if 1 < hour < 6 else "left"
    if "left" in d or "左" in d:
        return "left"
    if "right" in d or "右" in d:
        return "right"
    return "ahead"


def category_of(label: str) -> str:
    low = label.lower()
    for category, words in CATEGORY_WORDS.items():
        if any(w in low for w in words):
            return category
    return "obstacles"


def limit_words(text: str, max_words: int) -> str:
    if re.search(r"[\u4e00-\u9fff]", text):
        return text[: max_words * 2]
    words = text.split()
    if len(words) <= max_words:
        return text
    return " ".join(words[:max_words]).rstrip(",;:") + "."


class Narrator:
    """Per-session speech decisions; see the module docstring."""

    def __init__(self, settings: UserSettings, *, frame_age_budget_s: float = 1.5) -> None:
        self.settings = settings
        self.frame_age_budget_s = frame_age_budget_s
        self.stats = NarratorStats()
        self._queue: list[Utterance] = []
        self._memory: dict[str, _Memory] = {}
        self._ids = itertools.count(1)
        self.recent_scenes: deque[str] = deque(maxlen=5)

    # --- input -------------------------------------------------------------

    def observe(
        self, obs: ObservationMsg, *, frame_time: float, now: float, question: bool = False
    ) -> list[Utterance]:
        """Turn an observation into queued utterances; returns the ones queued."""
        queued: list[Utterance] = []
        for hazard in obs.hazards:
            u = self.hazard(hazard, frame_time=frame_time, now=now)
            if u is not None:
                queued.append(u)
        if question:
            queued.append(self.answer(obs.answer, frame_time=frame_time))
        s = self.settings
        talkative = not s.quiet and s.verbosity != "hazards-only"
        if talkative:
            for sign in obs.signs:
                u = self._offer(
                    Lane.SIGN,
                    "sign:" + normalise(sign),
                    self._phrase("sign").format(text=sign),
                    frame_time,
                    now,
                    threshold=0.999,
                )
                if u is not None:
                    queued.append(u)
        elif obs.signs:
            self.stats.filtered += len(obs.signs)
        if obs.scene:
            self.recent_scenes.append(obs.scene)
            if talkative and s.verbosity == "detailed" and not question:
                u = self._offer(Lane.SCENE, "scene", obs.scene, frame_time, now, threshold=0.6)
                if u is not None:
                    queued.append(u)
            else:
                self.stats.filtered += 1
        return queued

    def hazard(self, hazard: HazardInfo, *, frame_time: float, now: float) -> Utterance | None:
        """Queue one hazard (also used as hazards stream out of the model)."""
        cats = self.settings.hazard_categories
        if "all" not in cats and category_of(hazard.label) not in cats:
            self.stats.filtered += 1
            return None
        key = f"hazard:{normalise(hazard.label)}|{side_of(hazard.direction)}"
        text = self._hazard_text(hazard)
        mem = self._memory.get(key)
        if mem is not None and not self._hazard_news(hazard, mem, now):
            self.stats.deduplicated += 1
            return None
        if any(u.key == key for u in self._queue):
            self._queue = [u for u in self._queue if u.key != key]  # the newer one replaces it
        u = self._make(Lane.HAZARD, key, text, frame_time)
        self._memory[key] = _Memory(
            said_at=now, text=text, distance=hazard.distance_m, urgency=hazard.urgency
        )
        return u

    def answer(self, text: str | None, *, frame_time: float | None = None) -> Utterance:
        """Queue an answer; an empty one becomes "I'm not sure" (never silence)."""
        spoken = text.strip() if text and text.strip() else self._phrase("unsure")
        return self._make(Lane.ANSWER, f"answer:{next(self._ids)}", spoken, None)

    def notice(self, which: str) -> Utterance:
        """Queue a fixed notice (``no_vision``, ``not_heard``) in the answer lane."""
        return self._make(Lane.ANSWER, f"notice:{which}", self._phrase(which), None)

    def interrupt(self) -> int:
        """The user barged in: drop everything queued; returns how many."""
        dropped = len(self._queue)
        self._queue.clear()
        self.stats.interrupted += dropped
        return dropped

    # --- output ------------------------------------------------------------

    def next(self, now: float) -> Utterance | None:
        """The next utterance to speak, dropping (and counting) stale ones."""
        while self._queue:
            self._queue.sort(key=lambda u: u.lane)
            u = self._queue.pop(0)
            if self.is_stale(u, now):
                self.stats.stale_dropped += 1
                continue
            self.stats.spoken += 1
            return u
        return None

    def is_stale(self, u: Utterance, now: float) -> bool:
        return (
            u.lane != Lane.ANSWER
            and u.frame_time is not None
            and now - u.frame_time > self.frame_age_budget_s
        )

    def preempts(self, new: Utterance, current: Utterance) -> bool:
        """Whether ``new`` should cut ``current`` short (server-side barge-in): a warning
        cuts anything lower, the answer to a question included (it is said again after)."""
        return new.lane == Lane.HAZARD and current.lane > Lane.HAZARD

    def requeue(self, u: Utterance) -> None:
        """Say an answer cut short by a warning again, in full, after the warning."""
        if u.lane == Lane.ANSWER and all(q.key != u.key for q in self._queue):
            self._make(u.lane, u.key, u.text, u.frame_time)  # a new id: a new utterance

    def pending(self) -> int:
        return len(self._queue)

    def memory_for_prompt(self) -> list[str]:
        return list(self.recent_scenes) if self.settings.memory else []

    # --- internals -----------------------------------------------------------

    def _offer(
        self, lane: Lane, key: str, text: str, frame_time: float, now: float, *, threshold: float
    ) -> Utterance | None:
        mem = self._memory.get(key)
        if (
            mem is not None
            and now - mem.said_at < self.settings.repeat_after_s
            and similar(mem.text, text, threshold)
        ):
            self.stats.deduplicated += 1
            return None
        self._queue = [u for u in self._queue if u.key != key]
        self._memory[key] = _Memory(said_at=now, text=text)
        return self._make(lane, key, text, frame_time)

    def _hazard_news(self, h: HazardInfo, mem: _Memory, now: float) -> bool:
        since = now - mem.said_at
        if since >= self.settings.repeat_after_s:
            return True
        if h.urgency == "high" and since >= self.settings.urgent_repeat_s:
            return True
        order = {"low": 0, "normal": 1, "high": 2}
        if order.get(h.urgency, 1) > order.get(mem.urgency, 1):
            return True
        if h.distance_m is not None and mem.distance is not None:
            closer = mem.distance - h.distance_m
            return closer >= 0.5 or closer >= mem.distance / 3
        return False

    def _make(self, lane: Lane, key: str, text: str, frame_time: float | None) -> Utterance:
        u = Utterance(
            id=f"u{next(self._ids)}",
            lane=lane,
            text=limit_words(text, self.settings.max_words),
            key=key,
            frame_time=frame_time,
        )
        self._queue.append(u)
        return u

    def _phrase(self, name: str) -> str:
        return PHRASES.get(self.settings.language, PHRASES["en"])[name]

    def _hazard_text(self, h: HazardInfo) -> str:
        parts = [h.label[:1].upper() + h.label[1:]]
        if h.distance_m is not None:
            d = h.distance_m
            if abs(d - 1) < 0.05:
                parts.append(self._phrase("metre"))
            else:
                parts.append(self._phrase("metres").format(d=f"{d:g}"))
        if h.direction:
            parts.append(h.direction)
        sep = "，" if self.settings.language == "zh" else ", "
        return sep.join(parts) + ("。" if self.settings.language == "zh" else ".")
