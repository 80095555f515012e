"""The narrator as plain logic: observations in, utterances out, with scripted times."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from protocol import HazardInfo, Message, ObservationMsg, SpeechStart, SpeechStop
from server.narrator import (
    ANSWER_RESAY_S,
    SIGN_AGE_BUDGET_S,
    SIGN_REPEAT_S,
    Lane,
    Narrator,
    limit_words,
    side_of,
    similar,
)
from server.settings import UserSettings
from server.speaker import Speaker
from speech.tts import VoiceOptions

T0 = 1000.0


def chair(distance: float = 2.0, direction: str = "ahead", urgency: str = "normal") -> HazardInfo:
    return HazardInfo(label="chair", direction=direction, distance_m=distance, urgency=urgency)


def obs(
    *hazards: HazardInfo, signs: list[str] | None = None, scene: str = "", answer: str | None = None
) -> ObservationMsg:
    return ObservationMsg(hazards=list(hazards), signs=signs or [], scene=scene, answer=answer)


def drain(n: Narrator, now: float) -> list[tuple[Lane, str]]:
    """Speak everything queued to its end (as the speaker reports it)."""
    out = []
    while (u := n.next(now)) is not None:
        n.spoken(u, now)
        out.append((u.lane, u.text))
    return out


def test_lanes_hazard_answer_sign_scene() -> None:
    n = Narrator(UserSettings(verbosity="detailed"))
    n.observe(
        obs(chair(), signs=["EXIT"], scene="A long corridor.", answer="Yes, it is open."),
        frame_time=T0,
        now=T0,
        question=True,
    )
    assert drain(n, T0) == [
        (Lane.HAZARD, "Chair, 2 metres, ahead."),
        (Lane.ANSWER, "Yes, it is open."),
        (Lane.SIGN, "Sign: EXIT"),
    ]  # no scene line when answering a question
    n.observe(obs(scene="A long corridor."), frame_time=T0 + 1, now=T0 + 1)
    assert drain(n, T0 + 1) == [(Lane.SCENE, "A long corridor.")]


def test_the_same_chair_is_not_repeated_until_it_changes() -> None:
    n = Narrator(UserSettings(repeat_after_s=30))
    t = T0
    n.observe(obs(chair(3.0)), frame_time=t, now=t)
    assert len(drain(n, t)) == 1
    for step in range(1, 5):  # the same chair, every second
        n.observe(obs(chair(2.9)), frame_time=t + step, now=t + step)
        assert drain(n, t + step) == []
    n.observe(obs(chair(2.0)), frame_time=t + 5, now=t + 5)  # a metre closer
    assert drain(n, t + 5) == [(Lane.HAZARD, "Chair, 2 metres, ahead.")]
    n.observe(obs(chair(2.0, direction="left")), frame_time=t + 6, now=t + 6)  # other side
    assert len(drain(n, t + 6)) == 1
    n.observe(obs(chair(2.0)), frame_time=t + 36, now=t + 36)  # after repeat_after_s
    assert len(drain(n, t + 36)) == 1
    assert n.stats.deduplicated == 4


def test_urgent_hazard_is_repeated_while_it_persists() -> None:
    n = Narrator(UserSettings(urgent_repeat_s=3))
    spoken = []
    for step in range(7):
        t = T0 + step
        n.observe(obs(chair(1.0, urgency="high")), frame_time=t, now=t)
        spoken += [text for _, text in drain(n, t)]
    assert spoken == ["Chair, one metre, ahead."] * 3  # at 0 s, 3 s and 6 s


def test_more_urgent_is_news() -> None:
    n = Narrator(UserSettings())
    n.observe(obs(chair(2.0)), frame_time=T0, now=T0)
    drain(n, T0)
    n.observe(obs(chair(2.0, urgency="high")), frame_time=T0 + 1, now=T0 + 1)
    assert len(drain(n, T0 + 1)) == 1


def test_stale_warnings_are_dropped_and_counted_but_answers_are_not() -> None:
    n = Narrator(UserSettings(), frame_age_budget_s=1.5)
    n.observe(obs(chair(), answer="A chair."), frame_time=T0, now=T0 + 0.2, question=True)
    assert drain(n, T0 + 2.0) == [(Lane.ANSWER, "A chair.")]
    assert n.stats.stale_dropped == 1


def test_verbosity_levels_and_quiet_mode() -> None:
    def spoken(settings: UserSettings) -> list[Lane]:
        n = Narrator(settings)
        n.observe(obs(chair(), signs=["EXIT"], scene="A hall."), frame_time=T0, now=T0)
        return [lane for lane, _ in drain(n, T0)]

    assert spoken(UserSettings(verbosity="hazards-only")) == [Lane.HAZARD]
    assert spoken(UserSettings(verbosity="standard")) == [Lane.HAZARD, Lane.SIGN]
    assert spoken(UserSettings(verbosity="detailed")) == [Lane.HAZARD, Lane.SIGN, Lane.SCENE]
    assert spoken(UserSettings(verbosity="detailed", quiet=True)) == [Lane.HAZARD]


def test_hazard_categories_and_word_limit() -> None:
    n = Narrator(UserSettings(hazard_categories=["steps", "vehicles"], max_words=4))
    n.observe(
        obs(
            chair(),
            HazardInfo(label="stairs going down", direction="at 12 o'clock", distance_m=1.5),
            HazardInfo(label="bicycle", direction="right"),
        ),
        frame_time=T0,
        now=T0,
    )
    assert drain(n, T0) == [
        (Lane.HAZARD, "Stairs going down, 1.5."),
        (Lane.HAZARD, "Bicycle, right."),
    ]
    assert n.stats.filtered == 1


def test_similar_descriptions_are_not_repeated() -> None:
    n = Narrator(UserSettings(verbosity="detailed"))
    said = []
    for step, scene in enumerate(
        [
            "A quiet street with parked cars.",
            "A quiet street with some parked cars.",
            "An office lobby with a reception desk.",
        ]
    ):
        n.observe(obs(scene=scene), frame_time=T0 + step, now=T0 + step)
        said += [t for _, t in drain(n, T0 + step)]
    assert said == ["A quiet street with parked cars.", "An office lobby with a reception desk."]


def test_a_newer_description_replaces_one_not_yet_spoken() -> None:
    n = Narrator(UserSettings(verbosity="detailed"))
    n.observe(obs(scene="A bus stop."), frame_time=T0, now=T0)
    n.observe(obs(scene="A pedestrian crossing with lights."), frame_time=T0 + 1, now=T0 + 1)
    assert drain(n, T0 + 1) == [(Lane.SCENE, "A pedestrian crossing with lights.")]


def test_preemption_and_interrupt() -> None:
    n = Narrator(UserSettings(verbosity="detailed"))
    n.observe(obs(scene="A park."), frame_time=T0, now=T0)
    scene = n.next(T0)
    assert scene is not None
    hazard = n.hazard(chair(), frame_time=T0, now=T0)
    answer = n.answer("Yes.")
    assert hazard is not None and n.preempts(hazard, scene) and not n.preempts(answer, scene)
    assert n.preempts(hazard, answer) and not n.preempts(hazard, hazard)
    assert n.interrupt() == 2 and n.next(T0) is None
    n.requeue(answer)  # an answer cut short by a warning comes back; a description does not
    n.requeue(scene)
    assert drain(n, T0) == [(Lane.ANSWER, "Yes.")]


def test_empty_answer_is_not_silence_and_language_reaches_phrases() -> None:
    n = Narrator(UserSettings())
    n.observe(obs(), frame_time=T0, now=T0, question=True)
    assert drain(n, T0) == [(Lane.ANSWER, "I'm not sure.")]
    zh = Narrator(UserSettings(language="zh"))
    zh.observe(
        obs(HazardInfo(label="椅子", direction="前方", distance_m=2), signs=["出口"]),
        frame_time=T0,
        now=T0,
    )
    assert drain(zh, T0) == [(Lane.HAZARD, "椅子，2米，前方。"), (Lane.SIGN, "标志：出口")]


def test_direction_buckets_and_similarity() -> None:
    assert [
        side_of(d)
        for d in ("11 o'clock", "2 o'clock", "9 o'clock", "slightly left", "ahead", "on your right")
    ] == ["ahead", "right", "left", "left", "ahead", "right"]
    assert similar("Exit, this way!", "exit this way", 0.99)
    assert not similar("Platform 2", "Platform 3", 0.99)


def test_only_what_was_heard_is_remembered() -> None:
    n = Narrator(UserSettings())
    n.observe(obs(chair()), frame_time=T0, now=T0)
    first = n.next(T0)
    assert first is not None
    n.cut(first)  # Stop (or the user talking) cut it: not heard
    n.observe(obs(chair()), frame_time=T0 + 1, now=T0 + 1)
    again = n.next(T0 + 1)
    assert again is not None and again.text == first.text
    n.spoken(again, T0 + 1)  # heard to the end: now it is not repeated
    n.observe(obs(chair()), frame_time=T0 + 2, now=T0 + 2)
    assert n.next(T0 + 2) is None


def test_a_stale_warning_is_not_remembered_either() -> None:
    n = Narrator(UserSettings(), frame_age_budget_s=1.5)
    n.observe(obs(chair()), frame_time=T0, now=T0)
    assert n.next(T0 + 2) is None and n.stats.stale_dropped == 1
    n.observe(obs(chair()), frame_time=T0 + 2, now=T0 + 2)
    assert [t for _, t in drain(n, T0 + 2)] == ["Chair, 2 metres, ahead."]


def test_reading_goes_a_few_sentences_at_a_time_and_stop_keeps_the_place() -> None:
    n = Narrator(UserSettings(max_words=5))
    sentences = [f"This is sentence number {i} of the letter." for i in range(1, 9)]
    first = n.read(sentences)
    assert first is not None and first.lane == Lane.READING
    assert first.text.startswith(
        "This is sentence number 1 of the letter."
    )  # verbatim, not cut to 5 words
    u = n.next(T0)
    assert u is first
    n.spoken(u, T0)  # the next part is queued when this one was heard
    second = n.next(T0)
    assert second is not None and "number 6" in second.text
    n.cut(second)  # Stop
    n.interrupt()
    assert n.next(T0) is None
    again = n.continue_reading()  # "go on"
    assert again is not None and again.text == second.text


def test_a_warning_cuts_a_reading_which_comes_back_after_it() -> None:
    n = Narrator(UserSettings())
    reading = n.read(["Take one tablet twice a day."])
    assert reading is not None and n.next(T0) is reading
    hazard = n.hazard(chair(), frame_time=T0, now=T0)
    assert hazard is not None and n.preempts(hazard, reading)
    n.requeue(reading)
    assert [lane for lane, _ in drain(n, T0)] == [Lane.HAZARD, Lane.READING]


def test_nothing_to_see_is_said_once_until_it_changes() -> None:
    n = Narrator(UserSettings())
    said = n.view("nothing-to-see", "dark")
    assert said is not None and said.text.startswith("The camera sees nothing")
    assert n.view("nothing-to-see", "dark") is None
    assert n.view("ok", None) is None  # its end is not announced
    zh = Narrator(UserSettings(language="zh"))
    notice = zh.view("nothing-to-see", "dark")
    assert notice is not None and notice.text.startswith("摄像头")


# --- what the user hears: prefixes, warnings in flight, sides, readings cut, signs -----

QUESTION_18 = (
    "could you tell me whether the door in front of me is open or closed right now please."
)


def test_what_was_heard_does_not_push_the_answer_out() -> None:
    n = Narrator(UserSettings(max_words=12))
    heard = n.heard(QUESTION_18, too_long=True)
    n.answer("The door is open.")
    assert heard is not None and heard.lane == Lane.ANSWER
    assert drain(n, T0) == [
        (
            Lane.ANSWER,
            "I heard: could you tell me whether the door in front of me is open or closed. "
            "That was long; I answered the first part.",
        ),
        (Lane.ANSWER, "The door is open."),
    ]
    zh = Narrator(UserSettings(language="zh"))
    zh.heard("门开着吗？", too_long=False)
    assert drain(zh, T0) == [(Lane.ANSWER, "我听到的是：门开着吗。")]


def test_a_word_limit_does_not_double_the_full_stop() -> None:
    assert limit_words("One two three. Four five.", 3) == "One two three."
    assert limit_words("One two, three four", 2) == "One two."


def test_a_long_answer_is_cut_after_its_last_whole_sentence() -> None:
    """Found by a blind-user pass: a 39-word answer at the default 20 words was heard as
    "...about four metres ahead. The picture I." The answer the phone is sent ends
    after the last sentence that fits, when that keeps at least half the words."""
    answer = (
        "You are facing an open square. A person walks from left to right about four "
        "metres ahead. The picture I got is 360 by 640. There are benches on the left."
    )
    n = Narrator(UserSettings())  # max_words 20
    n.answer(answer)
    assert drain(n, T0) == [
        (
            Lane.ANSWER,
            "You are facing an open square. A person walks from left to right about four "
            "metres ahead. Say go on for more.",
        )
    ]
    # Found by a later blind-user pass: the rest was lost, "go on" said "nothing more
    # to read". It is kept for "go on" now, a few sentences at a time.
    rest = n.continue_reading()
    assert rest is not None and rest.lane == Lane.READING
    assert drain(n, T0) == [
        (Lane.READING, "The picture I got is 360 by 640. There are benches on the left.")
    ]
    assert n.continue_reading() is None
    short = Narrator(UserSettings())
    short.answer("Yes, the door is open.")
    assert drain(short, T0) == [(Lane.ANSWER, "Yes, the door is open.")]
    assert short.continue_reading() is None  # nothing was left out
    # a first sentence too short to stand for the answer is not all that is said
    cut = limit_words("Yes. The door on the left of the corridor is open and the other closed", 10)
    assert cut == "Yes. The door on the left of the corridor is."
    assert limit_words("门开着。左边有一把椅子，右边有一张桌子。前面有台阶。", 10) == (
        "门开着。左边有一把椅子，右边有一张桌子。"
    )
    # found by a review: "1." of "1.5 米" was taken for the end of a sentence
    step = "前方是一条走廊，左边有一扇玻璃门。门前有两级台阶，第一级台阶在前方大约1.5米处，请小心。"
    assert limit_words(step, 20) == (
        "前方是一条走廊，左边有一扇玻璃门。门前有两级台阶，第一级台阶在前方大约1.5米处。"
    )


def test_a_warning_being_spoken_is_not_queued_again() -> None:
    n = Narrator(UserSettings())
    streamed = n.hazard(chair(2.0), frame_time=T0, now=T0)  # streamed out of the model
    playing = n.next(T0)
    assert playing is not None and playing is streamed
    # the finished observation repeats it, and the next frame sees it again while it plays
    assert n.observe(obs(chair(2.0)), frame_time=T0, now=T0 + 0.2) == []
    assert n.observe(obs(chair(1.9)), frame_time=T0 + 0.5, now=T0 + 0.5) == []
    assert n.stats.deduplicated == 2
    # worse (closer by a third, more urgent, the other side) is news even while it plays
    assert len(n.observe(obs(chair(1.2)), frame_time=T0 + 0.6, now=T0 + 0.6)) == 1
    assert len(n.observe(obs(chair(2.0, urgency="high")), frame_time=T0, now=T0 + 0.6)) == 1
    assert len(n.observe(obs(chair(2.0, "left")), frame_time=T0, now=T0 + 0.6)) == 1
    n.spoken(playing, T0 + 1)
    assert n.observe(obs(chair(2.0)), frame_time=T0 + 1, now=T0 + 1) == []


def test_a_warning_cut_while_playing_is_said_on_the_next_frame() -> None:
    n = Narrator(UserSettings())
    n.hazard(chair(), frame_time=T0, now=T0)
    playing = n.next(T0)
    assert playing is not None
    n.cut(playing)  # Stop: not heard, no longer in flight
    assert len(n.observe(obs(chair()), frame_time=T0 + 1, now=T0 + 1)) == 1


def test_a_sign_being_spoken_is_not_queued_again() -> None:
    n = Narrator(UserSettings())
    n.sign("EXIT", frame_time=T0, now=T0)
    playing = n.next(T0)
    assert playing is not None and n.sign("EXIT", frame_time=T0 + 1, now=T0 + 1) is None


@pytest.mark.parametrize(
    ("direction", "side"),
    [
        ("à gauche", "left"),
        ("à droite", "right"),
        ("tout droit", "ahead"),
        ("à 3 heures", "right"),
        ("à 9h", "left"),
        ("links", "left"),
        ("rechts vorne", "right"),
        ("auf 2 Uhr", "right"),
        ("geradeaus", "ahead"),
        ("auf der linken Seite", "left"),
        ("linked to the wall", "ahead"),
        ("a la izquierda", "left"),
        ("a la derecha", "right"),
        ("todo derecho", "ahead"),
        ("a las 10", "left"),
        ("左前方", "left"),
        ("3点钟方向", "right"),
        ("九点钟方向", "left"),
        ("十二点方向", "ahead"),
    ],
)
def test_sides_in_every_language(direction: str, side: str) -> None:
    assert side_of(direction) == side


def test_the_same_obstacle_on_the_other_side_is_news_in_french() -> None:
    n = Narrator(UserSettings(language="fr"))
    n.observe(
        obs(HazardInfo(label="chaise", direction="à gauche", distance_m=2)), frame_time=T0, now=T0
    )
    n.observe(
        obs(HazardInfo(label="chaise", direction="à droite", distance_m=2)), frame_time=T0, now=T0
    )
    assert [t for _, t in drain(n, T0)] == [
        "Chaise, 2 mètres, à gauche.",
        "Chaise, 2 mètres, à droite.",
    ]


def _sentence(i: int) -> str:
    return f"Sentence {i} " + " ".join(["word"] * 28) + "."


async def test_a_reading_cut_by_a_warning_is_said_once_after_it() -> None:
    """The real speaker's sequence (requeue on barge-in, then cut when the utterance
    ends): the cut part comes back exactly once, after the warning, then the rest."""
    n = Narrator(UserSettings())
    sent: list[Message] = []
    changed = asyncio.Event()
    gate = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        changed.set()
        if isinstance(message, SpeechStart) and message.priority == "reading":
            await gate.wait()  # the reading "plays" until the warning has come in

    speaker = Speaker(
        narrator=n, send=send, tts=lambda: None, voice=lambda: VoiceOptions(), rate=16_000
    )
    task = asyncio.create_task(speaker.run())

    async def until(pred: Callable[[], bool]) -> None:
        while not pred():
            changed.clear()
            await asyncio.wait_for(changed.wait(), 5)

    try:
        speaker.offer(n.read([_sentence(0), _sentence(1)]))
        await until(lambda: speaker.current is not None and speaker.current.lane == Lane.READING)
        speaker.offer(n.hazard(chair(), frame_time=time.monotonic(), now=time.monotonic()))
        gate.set()
        last = _sentence(1)
        await until(
            lambda: (
                any(isinstance(m, SpeechStop) and m.reason == "done" for m in sent[-1:])
                and any(isinstance(m, SpeechStart) and m.text == last for m in sent)
            )
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    heard = [(m.priority, m.text[:10]) for m in sent if isinstance(m, SpeechStart)]
    assert heard == [
        ("reading", "Sentence 0"),
        ("hazard", "Chair, 2 m"),
        ("reading", "Sentence 0"),
        ("reading", "Sentence 1"),
    ]
    assert n.reading_left == 0 and n.pending() == 0


def test_requeue_and_cut_put_a_reading_back_once_in_either_order() -> None:
    for calls in (("requeue", "cut"), ("cut", "requeue"), ("cut", "cut")):
        n = Narrator(UserSettings())
        n.read([_sentence(0), _sentence(1)])
        playing = n.next(T0)
        assert playing is not None
        for call in calls:
            getattr(n, call)(playing)
        if "requeue" not in calls:
            n.continue_reading()  # after Stop, "go on"
        assert [t[:10] for _, t in drain(n, T0)] == ["Sentence 0", "Sentence 1"], calls


def test_an_unreadable_sign_is_one_item_and_quiet_after_a_readable_one() -> None:
    n = Narrator(UserSettings())
    n.sign(None, frame_time=T0, now=T0)
    assert [t for _, t in drain(n, T0)] == ["A sign I can't read."]
    assert n.sign(None, frame_time=T0 + 5, now=T0 + 5) is None  # whatever the model called it
    m = Narrator(UserSettings())
    m.sign("EXIT", frame_time=T0, now=T0)
    drain(m, T0)
    assert m.sign(None, frame_time=T0 + 5, now=T0 + 5) is None  # likely the sign just read
    assert m.sign(None, frame_time=T0 + 100, now=T0 + 100) is not None
    # in one look: the readable sign is said, the unreadable one is not
    k = Narrator(UserSettings())
    k.sign("EXIT", frame_time=T0, now=T0)
    assert k.sign(None, frame_time=T0, now=T0) is None


def test_a_sign_is_said_again_only_when_its_text_changes() -> None:
    n = Narrator(UserSettings(repeat_after_s=30))
    n.sign("Platform 2", frame_time=T0, now=T0)
    drain(n, T0)
    assert n.sign("Platform 2", frame_time=T0 + 31, now=T0 + 31) is None  # not every 30 s
    assert n.sign("Platform 3", frame_time=T0 + 32, now=T0 + 32) is not None
    drain(n, T0 + 32)
    assert n.sign("Platform 2", frame_time=T0 + 33 + SIGN_REPEAT_S, now=T0 + 33 + SIGN_REPEAT_S)


def test_a_sign_outlives_a_warnings_frame_age_budget() -> None:
    # The sign's words come after the vision model and the text reader: 3 s is normal.
    n = Narrator(UserSettings(), frame_age_budget_s=1.5)
    n.observe(obs(chair(), signs=["EXIT"]), frame_time=T0, now=T0)
    assert drain(n, T0 + 3) == [(Lane.SIGN, "Sign: EXIT")]  # the warning went stale
    n.sign("Platform 2", frame_time=T0, now=T0)
    assert n.next(T0 + SIGN_AGE_BUDGET_S + 0.1) is None and n.stats.stale_dropped == 2


def test_an_answer_cut_by_a_dropped_network_is_said_again_only_for_a_minute() -> None:
    for back_after, said_again in ((10.0, True), (ANSWER_RESAY_S + 1, False)):
        n = Narrator(UserSettings())
        n.answer("The door is open.")
        playing = n.next(T0)
        assert playing is not None
        n.dropped(playing, T0 + 1)  # the network dropped while it was being said
        again = n.next(T0 + 1 + back_after)  # the phone resumed
        assert (again is not None and again.text == "The door is open.") == said_again


def test_asking_again_in_the_dark_gets_the_short_answer() -> None:
    """Found by a blind-user pass: with the camera covered, the 12-word "The camera sees
    nothing..." was said on entering the dark and again as the answer to each question,
    three times back to back. While one is queued or playing, a question adds nothing;
    within 30 s of hearing it, the answer is "Still nothing to see."; later, in full."""
    n = Narrator(UserSettings())
    long = "The camera sees nothing: it may be covered or it is too dark."
    n.view("nothing-to-see", "dark")  # said on entering
    assert n.dark_answer(T0) is None  # queued already: that is the answer
    assert drain(n, T0) == [(Lane.ANSWER, long)]
    assert n.dark_answer(T0 + 5) is not None
    assert n.dark_answer(T0 + 5) is None  # a second question while the first is queued
    assert drain(n, T0 + 5) == [(Lane.ANSWER, "Still nothing to see.")]
    n.dark_answer(T0 + 40)
    assert drain(n, T0 + 40) == [(Lane.ANSWER, long)]
    fr = Narrator(UserSettings(language="fr"))
    fr.dark_answer(T0)
    drain(fr, T0)
    fr.dark_answer(T0 + 1)
    assert drain(fr, T0 + 1) == [(Lane.ANSWER, "Toujours rien à voir.")]


def test_after_stop_a_look_already_with_the_model_is_not_described() -> None:
    """Found by a blind-user pass: a description of the scene started 130 ms after Stop,
    from a look the model was busy with when Stop was pressed. "Never mind" covers it, as
    it covers a question's answer; its warning is still said, and what the camera sees
    after Stop is described as usual."""
    n = Narrator(UserSettings(verbosity="detailed"))
    n.interrupt()
    n.hush(T0)
    n.observe(obs(scene="A long corridor."), frame_time=T0 - 0.4, now=T0 + 0.1)
    assert drain(n, T0 + 0.1) == []
    n.observe(obs(chair(), scene="A long corridor."), frame_time=T0 - 0.2, now=T0 + 0.2)
    assert drain(n, T0 + 0.2) == [(Lane.HAZARD, "Chair, 2 metres, ahead.")]
    n.observe(obs(scene="A long corridor."), frame_time=T0 + 0.5, now=T0 + 0.9)
    assert drain(n, T0 + 0.9) == [(Lane.SCENE, "A long corridor.")]


def test_go_on_after_stopping_a_long_answer_says_the_cut_part_first() -> None:
    """Found by a second blind-user pass: Stop in the middle of "The path ahead is ...
    on your right. Say go on for more.", then "go on", went straight to the next
    sentence; the cut one was never heard."""
    n = Narrator(UserSettings(max_words=12))
    n.answer(
        "The path ahead is a wide paved sidewalk with a low wall on your right. "
        "About three metres ahead there is a green bench."
    )
    u = n.next(T0)
    assert u is not None and u.text.endswith("Say go on for more.")
    n.interrupt()
    n.cut(u)  # Stop while it plays
    rest = n.continue_reading()
    assert rest is not None
    assert rest.text.startswith("The path ahead is a wide paved sidewalk")
    assert "green bench" in rest.text
    # heard to its end, the part is not said again on "go on"
    n2 = Narrator(UserSettings(max_words=12))
    n2.answer(
        "The path ahead is a wide paved sidewalk with a low wall on your right. "
        "About three metres ahead there is a green bench."
    )
    drain(n2, T0)
    first = n2.next(T0)  # (drained above; the part said was cut mid-sentence)
    assert first is None
    again = n2.continue_reading()
    assert again is not None
    assert again.text == "on your right. About three metres ahead there is a green bench."
    # cut mid-sentence, the part ends with a pause mark, not a full stop (a pass heard
    # "with a door." as the end of a sentence)
    n3 = Narrator(UserSettings(max_words=8))
    n3.answer("There is a hallway ahead with a door at the end.")
    assert drain(n3, T0) == [
        (Lane.ANSWER, "There is a hallway ahead with a door… Say go on for more.")
    ]
