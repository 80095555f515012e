"""The companion's judgement: what to say, in which order, and what not to repeat.

Plain logic, no sockets or threads: feed it observations (with the time their
frame arrived) and take utterances out. Times are ``time.monotonic`` seconds,
passed in, so tests can script them.

Lanes, highest first: hazard warning, answer to the user's question, text
being read aloud, sign, scene description. ``next()`` always returns the
highest lane waiting. A new hazard while something lower is being spoken asks
for barge-in (``preempts``); an answer or a reading cut short that way is
said again afterwards.

Not repeating itself: every item the user actually heard leaves a memory
keyed by identity (a hazard's label and side; a sign's normalised text;
"scene"). The speaker reports what was heard (``spoken``): a warning that was
dropped as stale, cleared by Stop or cut short is not remembered, so the same
hazard on the next fresh frame is said. The item being spoken right now (from
``next()`` until ``spoken`` or ``cut``) counts as said meanwhile: a hazard
streamed out of the model and then repeated by the finished observation, or
seen again on the next frame while its warning plays, is not queued a second
time. An item is said again only when it changed (a hazard came closer by a
third or 0.5 m, changed side or became more urgent; a description's words
differ by more than 40%) or after ``repeat_after_s``. Dedup never hides a
hazard that got worse, and an urgent hazard still in the path is repeated
every ``urgent_repeat_s``.

Signs are said once and again only when their text changes: the same text is
not repeated for ``SIGN_REPEAT_S`` (10 minutes: walking back past it later is
news, standing in front of it is not). A sign that could not be read is one
item per session whatever the model called it ("a sign I can't read", at most
every ``UNREADABLE_SIGN_REPEAT_S``), and is not said at all while a readable
sign was said in the last ``UNREADABLE_AFTER_READ_S`` (it is most likely the
same sign, seen less well).

What was heard: ``heard()`` says "I heard: ..." (a short version of a long
transcript) as an utterance of its own before the answer, so the answer is
limited to ``max_words`` on its own and is never pushed out by the prefix.

A reading cut short is put back exactly once, whichever of ``requeue`` (a
warning cut it: it resumes after the warning) and ``cut`` (it ended without
being heard to its end) is called first, and however often.

Frame-age budget: nothing about a frame older than the budget is spoken;
a warning that went stale while it waited is dropped and counted. Answers
are exempt: the user asked and waits for them. Signs have a budget of their
own, ``SIGN_AGE_BUDGET_S``: a sign stays where it is and says the same
seconds later, and its words reach the narrator only after the vision model
and then the text reader have run (together often over the 1.5 s of a
warning's budget, so with that budget signs were dropped before they were
ever said).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from protocol import HazardInfo, ObservationMsg
from server.languages import LANGUAGES, clock_hour, language, phrase, side_word
from server.settings import UserSettings


class Lane(IntEnum):
    """Priority of an utterance; lower value is spoken first."""

    HAZARD = 0
    ANSWER = 1
    READING = 2
    SIGN = 3
    SCENE = 4

    @property
    def wire(self) -> str:
        return self.name.lower()


@dataclass(kw_only=True)
class Utterance:
    """One thing to say.

    Attributes:
        kind: The ``speech-start`` priority on the wire when it differs from the
            lane's name (``notice`` for fixed notices said in the answer lane).
        distance, urgency: A hazard's, remembered once it was heard.
        put_back: A reading part that was cut has been put back for "go on" or
            after the warning (once: see ``Narrator.cut`` and ``requeue``).
    """

    id: str
    lane: Lane
    text: str
    key: str
    frame_time: float | None = None
    """When the frame it is about arrived (monotonic); None for answers not tied to a frame."""
    kind: str | None = None
    distance: float | None = None
    urgency: str = "normal"
    put_back: bool = False
    resume_text: str | None = None
    """An answer said in part ("say go on for more"): what "go on" says again first if
    this part is cut short (Stop), before the rest."""
    expires: float | None = None
    """Not said after this (monotonic): an answer said again after a dropped network is
    about where the user was then."""

    @property
    def wire(self) -> str:
        return self.kind or self.lane.wire


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


READING_CHUNK_WORDS = 40
"""A reading is spoken a few sentences at a time, so Stop and "go on" work between them."""
DARK_REPEAT_S = 30.0
"""Asked again within this long of hearing "the camera sees nothing...", the short form."""

SIGN_AGE_BUDGET_S = 5.0
"""A sign about a frame older than this is not said (warnings: ``frame_age_budget_s``)."""
SIGN_REPEAT_S = 600.0
"""The same sign text is said again only after 10 minutes (not ``repeat_after_s``)."""
UNREADABLE_SIGN_REPEAT_S = 120.0
""""A sign I can't read" at most every 2 minutes, whatever the model called the sign."""
UNREADABLE_AFTER_READ_S = 30.0
"""No "a sign I can't read" within 30 s of a readable sign (likely the same sign)."""
UNREADABLE_SIGN_KEY = "sign:?"
HEARD_WORDS = 15
""""I heard: ..." repeats at most this many words of what was heard (CJK: twice as
many characters): enough to notice a mishearing, short enough to leave the answer."""
_END_PUNCTUATION = ".,;:!?…。，；：！？、 "
_SENTENCE_END = ".!?…。！？"
ANSWER_RESAY_S = 60.0
"""An answer cut by a dropped network is said again if the phone is back within this
long; later, the user has moved on and may have asked again."""


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
    """left / ahead / right bucket of a direction in any language of the table (clock
    positions included: "2 o'clock", "à 3 heures", "auf 9 Uhr", "a las 10", "3点钟")."""
    hour = clock_hour(direction)
    if hour is not None:
        hour %= 12
        return "ahead" if hour in (11, 0, 1) else "right" if 1 < hour < 6 else "left"
    return side_word(direction) or "ahead"


def category_of(label: str) -> str:
    """The hazard category of a label in any language of the table (``obstacles``
    when no word matches: an unknown thing in the way is still an obstacle)."""
    low = label.lower()
    for lang in LANGUAGES.values():
        for category, words in lang.category_words.items():
            if any(w in low for w in words):
                return category
    return "obstacles"


def limit_words(text: str, max_words: int) -> str:
    """At most ``max_words`` words (CJK: twice as many characters). When cut, it ends
    after the last whole sentence if that keeps at least half of them (a blind-user
    pass heard "...four metres ahead. The picture I." from a cut mid-sentence), else
    at the limit with one full stop (never "please.." after a word that ended one)."""
    return split_words(text, max_words)[0]


def split_words(text: str, max_words: int, *, cut_mark: str | None = None) -> tuple[str, str]:
    """``limit_words``, and the rest of ``text`` it left out ("" when nothing was).
    ``cut_mark``: what ends a part cut mid-sentence instead of a full stop (an answer
    that goes on: "with a door." sounded like the end of the sentence)."""
    if re.search(r"[\u4e00-\u9fff]", text):
        limit = max_words * 2
        if len(text) <= limit:
            return text, ""
        head = text[:limit]
        end = max(head.rfind(c) for c in "。！？!?")  # not ".": 1.5 米 is not two sentences
        if end + 1 >= limit // 2:
            return head[: end + 1], text[end + 1 :].strip()
        return head.rstrip(_END_PUNCTUATION) + (cut_mark or "。"), text[limit:].strip()
    words = text.split()
    if len(words) <= max_words:
        return text, ""
    kept = words[:max_words]
    for k in range(len(kept) - 1, (max_words + 1) // 2 - 2, -1):
        if kept[k].endswith(tuple(_SENTENCE_END)):
            return " ".join(kept[: k + 1]), " ".join(words[k + 1 :])
    return " ".join(kept).rstrip(_END_PUNCTUATION) + (cut_mark or "."), " ".join(words[max_words:])


def _sentences(text: str) -> list[str]:
    """``text`` in sentences (kept whole, with their punctuation), for "go on"."""
    parts = re.split(r"(?<=[.!?。！？])\s+|(?<=[。！？])", text.strip())
    return [p for p in parts if p.strip()]


def _shorten(text: str, max_words: int) -> str:
    """``text`` cut to ``max_words`` words (CJK: characters x2), with no end punctuation
    (the phrase it goes into has its own)."""
    text = text.strip()
    if re.search(r"[\u4e00-\u9fff]", text):
        return text[: max_words * 2].rstrip(_END_PUNCTUATION)
    return " ".join(text.split()[:max_words]).rstrip(_END_PUNCTUATION)


class Narrator:
    """Per-session speech decisions; see the module docstring."""

    def __init__(self, settings: UserSettings, *, frame_age_budget_s: float = 1.5) -> None:
        self.settings = settings
        self.frame_age_budget_s = frame_age_budget_s
        self.stats = NarratorStats()
        self.on_stale: Callable[[Utterance], None] | None = None
        """Told of each utterance dropped as stale (the session counts them by lane)."""
        self.wake: Callable[[], None] | None = None
        """Wakes the speaker of the session that has this narrator now (a resumed one
        takes it over): told when ``dropped`` puts something back to say."""
        self._queue: list[Utterance] = []
        self._memory: dict[str, _Memory] = {}
        self._ids = itertools.count(1)
        self.recent_scenes: deque[str] = deque(maxlen=5)
        self._reading: deque[str] = deque()
        self._notices_heard: dict[str, float] = {}  # notice key -> when last heard in full
        self._hushed_at = float("-inf")  # when Stop was last pressed
        self._view = "ok"
        self._current: Utterance | None = None
        """The utterance being spoken (from ``next()`` until ``spoken`` or ``cut``)."""
        self._current_since = 0.0

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
            queued.append(self.answer(obs.answer))
        s = self.settings
        talkative = not s.quiet and s.verbosity != "hazards-only"
        if talkative:
            for sign in obs.signs:
                u = self.sign(sign, frame_time=frame_time, now=now)
                if u is not None:
                    queued.append(u)
        elif obs.signs:
            self.stats.filtered += len(obs.signs)
        if obs.scene:
            self.recent_scenes.append(obs.scene)
            hushed = frame_time < self._hushed_at
            if talkative and s.verbosity == "detailed" and not question and not hushed:
                u = self._offer(Lane.SCENE, "scene", obs.scene, frame_time, now, threshold=0.6)
                if u is not None:
                    queued.append(u)
            else:
                self.stats.filtered += 1
        return queued

    def talkative(self) -> bool:
        """Whether signs are said (not quiet, not warnings-only)."""
        s = self.settings
        return not s.quiet and s.verbosity != "hazards-only"

    def hazard(self, hazard: HazardInfo, *, frame_time: float, now: float) -> Utterance | None:
        """Queue one hazard (also used as hazards stream out of the model)."""
        cats = self.settings.hazard_categories
        if "all" not in cats and category_of(hazard.label) not in cats:
            self.stats.filtered += 1
            return None
        key = f"hazard:{normalise(hazard.label)}|{side_of(hazard.direction)}"
        mem = self._memory.get(key)
        if mem is not None and not self._hazard_news(hazard, mem, now):
            self.stats.deduplicated += 1
            return None
        playing = self._current
        if (
            playing is not None
            and playing.key == key
            and not self._hazard_news(hazard, self._as_said(playing), now)
        ):  # its warning is playing now: the same news again is not said twice
            self.stats.deduplicated += 1
            return None
        self._queue = [u for u in self._queue if u.key != key]  # the newer one replaces it
        u = self._make(Lane.HAZARD, key, self._hazard_text(hazard), frame_time)
        u.distance, u.urgency = hazard.distance_m, hazard.urgency
        return u

    def sign(
        self, text: str | None, *, frame_time: float, now: float, key: str | None = None
    ) -> Utterance | None:
        """Queue a sign: its words as read, or ``None`` text for a sign that could not
        be read ("a sign I can't read", never a guess of its words)."""
        if text is None:
            if self._readable_sign_since(now - UNREADABLE_AFTER_READ_S):
                self.stats.deduplicated += 1
                return None
            return self._offer(
                Lane.SIGN,
                UNREADABLE_SIGN_KEY,  # one item, whatever the model called the sign
                self.phrase("sign_unreadable"),
                frame_time,
                now,
                threshold=0.999,
                repeat_s=UNREADABLE_SIGN_REPEAT_S,
            )
        said = self.phrase("sign", text=text)
        key = key or "sign:" + normalise(text)
        return self._offer(
            Lane.SIGN, key, said, frame_time, now, threshold=0.999, repeat_s=SIGN_REPEAT_S
        )

    def answer(self, text: str | None) -> Utterance:
        """Queue an answer; an empty one becomes "I'm not sure" (never silence). Answers are
        never stale: the user asked and waits for them. An answer longer than
        ``max_words`` is said up to there, with "say go on for more": the rest is kept
        for "go on" (a blind-user pass lost "several people, the nearest three metres
        away" after "Ahead of you is a wide open square.", with no way to hear it)."""
        spoken = text.strip() if text and text.strip() else self.phrase("unsure")
        said, rest = split_words(spoken, self.settings.max_words, cut_mark="…")
        if not rest:
            return self._make(Lane.ANSWER, f"answer:{next(self._ids)}", said, None, verbatim=True)
        self._reading = deque(_sentences(rest))
        self._queue = [u for u in self._queue if u.lane != Lane.READING]
        sep = "" if language(self.settings.language).cjk else " "
        u = self._make(
            Lane.ANSWER,
            f"answer:{next(self._ids)}",
            said + sep + self.phrase("more_follows"),
            None,
            verbatim=True,
        )
        u.resume_text = said
        return u

    def heard(self, text: str | None, *, too_long: bool = False) -> Utterance | None:
        """Queue what the recogniser heard ("I heard: ...", a short version of a long
        transcript) and/or that a long question was answered from its first part, as
        one utterance in the answer lane, before the answer it goes with (so the answer
        keeps its own ``max_words``). ``None`` when there is nothing to say."""
        parts: list[str] = []
        if text and _shorten(text, HEARD_WORDS):
            parts.append(self.phrase("heard", text=_shorten(text, HEARD_WORDS)))
        if too_long:
            parts.append(self.phrase("too_long"))
        if not parts:
            return None
        sep = "" if language(self.settings.language).cjk else " "
        return self._make(
            Lane.ANSWER, f"heard:{next(self._ids)}", sep.join(parts), None, verbatim=True
        )

    def told(self, text: str) -> Utterance:
        """Queue a sentence the server composed (what a caregiver's change did) in the
        answer lane, as a notice."""
        u = self._make(Lane.ANSWER, f"notice:told:{next(self._ids)}", text, None, verbatim=True)
        u.kind = "notice"
        return u

    def notice(self, which: str, **values: object) -> Utterance:
        """Queue a fixed notice (``no_vision``, ``not_heard``, ...) in the answer lane."""
        u = self._make(Lane.ANSWER, f"notice:{which}", self.phrase(which, **values), None)
        u.kind = "notice"
        return u

    def hush(self, now: float) -> None:
        """Stop was pressed: "never mind" covers the description of a look already with
        the model, as it covers the answer to a question (a blind-user pass heard one
        start 130 ms after Stop). Its warnings and signs still come, and so do
        descriptions of what the camera sees after Stop."""
        self._hushed_at = now

    def dark_answer(self, now: float) -> Utterance | None:
        """The answer to a question asked while the camera sees nothing (a dark frame is
        never sent to the model). The long sentence once; asked again within
        ``DARK_REPEAT_S`` of hearing it, the short "Still nothing to see."; nothing more
        while either is queued or being said (a blind-user pass heard the 12-word
        sentence three times back to back, 10 s of it, after two questions)."""
        keys = ("notice:sees_nothing_dark", "notice:still_dark")
        waiting = [*self._queue, *([self._current] if self._current is not None else [])]
        if any(u.key in keys for u in waiting):
            return None
        heard = self._notices_heard.get(keys[0])
        if heard is not None and now - heard < DARK_REPEAT_S:
            return self.notice("still_dark")
        return self.notice("sees_nothing_dark")

    def view(self, view: str, reason: str | None) -> Utterance | None:
        """The camera's view changed state. Entering "nothing to see" is said once; the
        end of it is said by the first look that finds something, not by a notice."""
        previous, self._view = self._view, view
        if view == previous or view == "ok":
            return None
        which = "sees_nothing_featureless" if reason == "featureless" else "sees_nothing_dark"
        return self.notice(which)

    def read(self, sentences: list[str]) -> Utterance | None:
        """Start reading text aloud, verbatim, a few sentences at a time."""
        self._reading = deque(s for s in sentences if s.strip())
        self._queue = [u for u in self._queue if u.lane != Lane.READING]
        return self._next_reading()

    def continue_reading(self) -> Utterance | None:
        """ "Go on": the next part of the text stopped earlier (``None`` if none is left)."""
        if any(u.lane == Lane.READING for u in self._queue):
            return None
        return self._next_reading()

    @property
    def reading_left(self) -> int:
        return len(self._reading)

    def interrupt(self) -> int:
        """The user barged in: drop everything queued; returns how many. A reading
        stops where it is and "go on" continues it."""
        dropped = len(self._queue)
        for u in self._queue:
            self._put_back(u)
        self._queue.clear()
        self.stats.interrupted += dropped
        return dropped

    # --- output ------------------------------------------------------------

    def next(self, now: float, *, hazards_only: bool = False) -> Utterance | None:
        """The next utterance to speak, dropping (and counting) stale ones;
        ``hazards_only`` while the user is talking (the rest waits)."""
        while self._queue:
            self._queue.sort(key=lambda u: u.lane)
            if hazards_only and self._queue[0].lane != Lane.HAZARD:
                return None
            u = self._queue.pop(0)
            if self.is_stale(u, now):
                self.stats.stale_dropped += 1
                if self.on_stale is not None:
                    self.on_stale(u)
                continue
            self._current, self._current_since = u, now
            return u
        return None

    def spoken(self, u: Utterance, now: float) -> None:
        """The user heard ``u`` to its end: remember it (dedup), and queue the next part
        of a reading."""
        self.stats.spoken += 1
        self._done(u)
        if u.kind == "notice":
            self._notices_heard[u.key] = now
        if u.resume_text is not None and self._reading and self._reading[0] == u.resume_text:
            self._reading.popleft()  # put back when cut, and then heard in full after all
        if u.lane in (Lane.HAZARD, Lane.SIGN, Lane.SCENE):
            self._memory[u.key] = _Memory(
                said_at=now, text=u.text, distance=u.distance, urgency=u.urgency
            )
        if u.lane == Lane.READING:
            self._next_reading()

    def cut(self, u: Utterance) -> None:
        """``u`` was cut short (Stop, the user talking, the connection dropped): it is
        not remembered as said; a reading keeps its place for "go on" (put back once,
        even when ``requeue`` already put it back)."""
        self._done(u)
        self._put_back(u)

    def dropped(self, u: Utterance, now: float) -> None:
        """The connection dropped while ``u`` was being spoken. A warning waits for the
        phone to resume (and is still dropped if its frame is too old by then); an
        answer is said again in full after the resume, within ``ANSWER_RESAY_S`` (the user
        asked and is waiting: a blind-user pass lost an answer cut by a drop for good); a
        reading keeps its place
        for "go on"; anything else is as if cut."""
        self.cut(u)
        if u.lane == Lane.HAZARD and all(q.key != u.key for q in self._queue):
            self._queue.append(u)
        elif u.lane == Lane.ANSWER and u.kind != "notice":
            self.requeue(u)
            for q in self._queue:
                if q.key == u.key:
                    q.expires = now + ANSWER_RESAY_S
        # The old session's speaker gets here as it is torn down, which on a loaded
        # machine can be after the resumed session started and found nothing to say:
        # the warning waited, unsaid, for the next thing to wake its speaker.
        if self.wake is not None:
            self.wake()

    def is_stale(self, u: Utterance, now: float) -> bool:
        if u.expires is not None and now > u.expires:
            return True
        if u.lane in (Lane.ANSWER, Lane.READING) or u.frame_time is None:
            return False
        budget = SIGN_AGE_BUDGET_S if u.lane == Lane.SIGN else self.frame_age_budget_s
        return now - u.frame_time > max(budget, self.frame_age_budget_s)

    def preempts(self, new: Utterance, current: Utterance) -> bool:
        """Whether ``new`` should cut ``current`` short (server-side barge-in): a warning
        cuts anything lower, the answer or a reading included (said again after)."""
        return new.lane == Lane.HAZARD and current.lane > Lane.HAZARD

    def requeue(self, u: Utterance) -> None:
        """Say an answer or a reading cut short by a warning again after the warning.

        A reading resumes from the part that was cut, once: the speaker also reports
        the cut part (``cut``) when it ends, and either call puts it back only if the
        other has not."""
        if u.lane == Lane.READING:
            self._put_back(u)
            if all(q.lane != Lane.READING for q in self._queue):
                self._next_reading()
            return
        if u.lane == Lane.ANSWER and all(q.key != u.key for q in self._queue):
            again = self._make(u.lane, u.key, u.text, u.frame_time, verbatim=True)
            again.kind, again.resume_text = u.kind, u.resume_text
            u.put_back = True  # it is said again in full: "go on" need not repeat it

    def pending(self) -> int:
        return len(self._queue)

    def memory_for_prompt(self) -> list[str]:
        return list(self.recent_scenes) if self.settings.memory else []

    # --- internals -----------------------------------------------------------

    def _done(self, u: Utterance) -> None:
        if self._current is u:
            self._current = None

    def _put_back(self, u: Utterance) -> None:
        """A reading part not heard to its end goes back to the front, exactly once; so
        does the part of a long answer that was being said (a blind-user pass stopped
        one, said "go on", and never heard the rest of the cut sentence)."""
        text = u.text if u.lane == Lane.READING else u.resume_text
        if text is None or u.put_back:
            return
        u.put_back = True
        if not self._reading or self._reading[0] != text:
            self._reading.appendleft(text)

    def _as_said(self, u: Utterance) -> _Memory:
        """The utterance being spoken, as if already heard (for dedup while it plays)."""
        return _Memory(
            said_at=self._current_since, text=u.text, distance=u.distance, urgency=u.urgency
        )

    def _readable_sign_since(self, since: float) -> bool:
        """Whether a readable sign was heard after ``since``, is playing, or is queued."""
        if any(
            key.startswith("sign:") and key != UNREADABLE_SIGN_KEY and mem.said_at >= since
            for key, mem in self._memory.items()
        ):
            return True
        waiting = [*self._queue, *([self._current] if self._current is not None else [])]
        return any(u.lane == Lane.SIGN and u.key != UNREADABLE_SIGN_KEY for u in waiting)

    def _next_reading(self) -> Utterance | None:
        if not self._reading:
            return None
        parts: list[str] = []
        words = 0
        while self._reading and (
            not parts or words + _words(self._reading[0]) <= READING_CHUNK_WORDS
        ):
            sentence = self._reading.popleft()
            parts.append(sentence)
            words += _words(sentence)
        sep = "" if language(self.settings.language).cjk else " "
        return self._make(
            Lane.READING, f"reading:{next(self._ids)}", sep.join(parts), None, verbatim=True
        )

    def _offer(
        self,
        lane: Lane,
        key: str,
        text: str,
        frame_time: float,
        now: float,
        *,
        threshold: float,
        repeat_s: float | None = None,
    ) -> Utterance | None:
        repeat = self.settings.repeat_after_s if repeat_s is None else repeat_s
        playing = self._current
        for mem in (
            self._memory.get(key),
            self._as_said(playing) if playing is not None and playing.key == key else None,
        ):
            if (
                mem is not None
                and now - mem.said_at < repeat
                and similar(mem.text, text, threshold)
            ):
                self.stats.deduplicated += 1
                return None
        self._queue = [u for u in self._queue if u.key != key]
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

    def _make(
        self,
        lane: Lane,
        key: str,
        text: str,
        frame_time: float | None,
        *,
        verbatim: bool = False,
    ) -> Utterance:
        u = Utterance(
            id=f"u{next(self._ids)}",
            lane=lane,
            text=text if verbatim else limit_words(text, self.settings.max_words),
            key=key,
            frame_time=frame_time,
        )
        self._queue.append(u)
        return u

    def phrase(self, name: str, **values: object) -> str:
        """A fixed phrase in the user's language."""
        return phrase(self.settings.language, name, **values)

    def _hazard_text(self, h: HazardInfo) -> str:
        parts = [h.label[:1].upper() + h.label[1:]]
        if h.distance_m is not None:
            d = h.distance_m
            if abs(d - 1) < 0.05:
                parts.append(self.phrase("metre"))
            else:
                parts.append(self.phrase("metres", d=f"{d:g}"))
        if h.direction:
            parts.append(h.direction)
        cjk = language(self.settings.language).cjk
        return ("，" if cjk else ", ").join(parts) + ("。" if cjk else ".")


def _words(text: str) -> int:
    return len(text) // 2 if re.search(r"[\u4e00-\u9fff]", text) else len(text.split())
