"""The narrator as plain logic: observations in, utterances out, with scripted times."""

from __future__ import annotations

from protocol import HazardInfo, ObservationMsg
from server.narrator import Lane, Narrator, side_of, similar
from server.settings import UserSettings

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
