"""The prompts the vision-language model gets, and the JSON schema it answers in.

Versioned: ``PROMPT_VERSION`` goes into logs with every call, so a change in
behaviour can be traced to a prompt change. Edit prompts here only.

Written for walking without sight: what is in the path comes first (what, where
as a clock position or left/ahead/right, how far in metres, how urgent), then
text on signs read verbatim, then one short sentence about the scene. When the
user asks a question, the answer is brief and says so when it cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROMPT_VERSION = "2026-11-24.1"

SCHEMA = """{
  "hazards": [{"label": "chair", "direction": "11 o'clock", "distance_m": 1.5, "urgency": "high"}],
  "signs": ["EXIT"],
  "scene": "One short sentence.",
  "answer": "Only when asked a question."
}"""
"""The answer format. ``direction``: a clock position (12 o'clock is straight
ahead) or left/ahead/right; ``distance_m``: metres, a number; ``urgency``:
high (in the path within about 2 m), normal, low."""

LANGUAGES = {
    "en": "English",
    "zh": "Mandarin Chinese (simplified characters)",
    "cmn": "Mandarin Chinese (simplified characters)",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
}

SYSTEM = (
    "You are the eyes of a blind person who is walking. The image is from a phone camera "
    "held at chest height, pointing where they walk. Be brief, concrete and honest; never "
    "guess what you cannot see.\n"
    "Reply with one compact JSON object and nothing else, in this format:\n"
    f"{SCHEMA}\n"
    "- hazards: only things in or next to the walking path that they could bump into, trip "
    "on or fall from (obstacles, steps, stairs, kerbs, poles, open doors, vehicles, people "
    "coming close), most urgent first; [] if the path is clear.\n"
    "- signs: text on signs, labels and screens, copied exactly; [] if none is readable.\n"
    "- scene: one sentence of at most 12 words about where they are.\n"
    "Write the values of label, direction, signs, scene and answer in {language}."
)

SCENE_TASK = "Describe this view for walking. Leave out 'answer'."
QUESTION_TASK = (
    'The user asks: "{question}"\n'
    "Put a short, direct answer (at most two sentences) in 'answer'. If the image does not "
    "show enough to answer, say so in 'answer' instead of guessing. Still list hazards."
)
MEMORY = "Earlier observations, oldest first (for questions about what changed):\n{items}"


@dataclass(kw_only=True)
class Prompt:
    """A rendered prompt: the system text and the user text that goes with the image."""

    system: str
    user: str
    version: str = PROMPT_VERSION
    question: str | None = None
    memory: list[str] = field(default_factory=list)


def language_name(code: str) -> str:
    """The name the model understands for a BCP-47-ish code (falls back to the code)."""
    return LANGUAGES.get(code.split("-")[0].lower(), code)


def build_prompt(
    *, question: str | None = None, language: str = "en", memory: list[str] | None = None
) -> Prompt:
    """The prompt for one frame: a scene check, or an answer to ``question``."""
    system = SYSTEM.replace("{language}", language_name(language))
    parts = []
    if memory:
        parts.append(MEMORY.format(items="\n".join(f"- {m}" for m in memory[-5:])))
    parts.append(QUESTION_TASK.format(question=question.strip()) if question else SCENE_TASK)
    return Prompt(
        system=system, user="\n\n".join(parts), question=question, memory=list(memory or [])
    )
