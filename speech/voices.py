"""Which espeak-ng voices exist, and which one speaks a given request.

A voice id is espeak-ng's own identifier, the ``File`` column of
``espeak-ng --voices`` (``gmw/en-GB-x-rp``, ``sit/cmn``, ``roa/fr``): it names
one voice exactly, is stable across espeak-ng releases, and is what espeak-ng
loads. Nothing a client sends reaches espeak-ng as-is: a requested id is looked
up (a full, case-insensitive match) in the list espeak-ng itself prints, and
the list's own spelling is what is passed on. Anything else (``../../dev/zero``,
``en\\n``, a voice of another language) is refused and the language's default
voice speaks instead, with the reason reported as a ``VoiceFallback``.

The list comes from the ``espeak-ng --voices`` command (about 10 ms, once per
process, cached), so the settings page and validation work before the
synthesiser thread starts and without touching espeak-ng's global state.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger("seealoud.voices")

# Preferred voice per language where espeak-ng offers several; anything else takes the
# voice espeak-ng itself ranks first for the language.
_PREFERRED = {
    "en": "gmw/en",
    "en-gb": "gmw/en",
    "en-us": "gmw/en-US",
    "zh": "sit/cmn",
    "cmn": "sit/cmn",
    "fr": "roa/fr",
    "de": "gmw/de",
    "es": "roa/es",
}
_LINE = re.compile(r"\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)")
_OTHER = re.compile(r"\((\S+) (\d+)\)")


@dataclass(frozen=True, kw_only=True)
class VoiceInfo:
    """One voice espeak-ng lists.

    Attributes:
        id: espeak-ng's identifier (``gmw/en-GB-x-rp``); what settings store.
        name: Readable name (``English (Received Pronunciation)``).
        language: Its main language tag, lower case (``en-gb-x-rp``).
        also: Other language tags it serves with espeak-ng's rank for each
            (``(("en-gb", 4), ("en", 5))``).
        priority: espeak-ng's rank for its main language (lower is preferred).
    """

    id: str
    name: str
    language: str
    also: tuple[tuple[str, int], ...] = ()
    priority: int = 5

    def rank_for(self, language: str) -> int | None:
        """espeak-ng's rank of this voice for ``language`` (``None``: it does not speak it)."""
        want = language.lower()
        ranks = [self.priority] if _same_language(self.language, want) else []
        ranks += [rank for tag, rank in self.also if _same_language(tag, want)]
        return min(ranks) if ranks else None


@dataclass(frozen=True, kw_only=True)
class VoiceFallback:
    """The voice asked for did not speak; ``used`` did. For the caregiver to see why.

    Attributes:
        requested: The id from the settings (as sent; never passed to espeak-ng).
        used: The voice that spoke instead (the language's default), or ``None``
            for espeak-ng's built-in default.
        reason: Readable reason (``not a voice espeak-ng lists``...).
    """

    requested: str
    used: str | None
    reason: str


def _same_language(tag: str, want: str) -> bool:
    """``en-gb`` serves ``en`` and ``en-gb``; ``en`` does not serve ``en-gb`` exactly."""
    tag = tag.lower()
    return tag == want or tag.startswith(want + "-") or want.split("-")[0] == tag


@functools.lru_cache(maxsize=1)
def _catalogue() -> tuple[VoiceInfo, ...]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        log.warning("espeak-ng command not found: no voices can be listed or chosen")
        return ()
    try:
        out = subprocess.run(
            [exe, "--voices"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("espeak-ng --voices failed (%s): no voices can be chosen", exc)
        return ()
    return tuple(parse_voice_list(out))


def parse_voice_list(text: str) -> list[VoiceInfo]:
    """Voices from the output of ``espeak-ng --voices`` (the header line is skipped)."""
    voices = []
    for line in text.splitlines()[1:]:
        match = _LINE.fullmatch(line)
        if match is None:
            continue
        pty, language, _gender, name, ident, rest = match.groups()
        voices.append(
            VoiceInfo(
                id=ident,
                name=name.replace("_", " "),
                language=language.lower(),
                also=tuple((tag.lower(), int(rank)) for tag, rank in _OTHER.findall(rest)),
                priority=int(pty),
            )
        )
    return voices


def list_voices(language: str | None = None) -> list[VoiceInfo]:
    """The voices espeak-ng lists; for ``language``, those that speak it, best first."""
    voices = list(_catalogue())
    if language is None:
        return voices
    ranked = []
    for index, info in enumerate(voices):
        rank = info.rank_for(language)
        if rank is not None:
            ranked.append((rank, index, info))
    return [info for _, _, info in sorted(ranked)]


def find_voice(voice: str) -> VoiceInfo | None:
    """The listed voice whose id is ``voice`` (full match, any case), else ``None``."""
    if not voice.isascii():  # casefold maps some non-ASCII letters onto ASCII
        return None
    key = voice.lower()
    for info in _catalogue():
        if info.id.lower() == key:
            return info
    return None


def is_valid_voice(voice: str, language: str | None = None) -> bool:
    """Whether ``voice`` is an id espeak-ng lists (and, given ``language``, speaks it)."""
    info = find_voice(voice)
    return info is not None and (language is None or info.rank_for(language) is not None)


def default_voice(language: str) -> str | None:
    """The voice that speaks ``language`` by default, ``None`` when espeak-ng has none."""
    code = language.lower()
    for key in (code, code.split("-")[0]):
        preferred = _PREFERRED.get(key)
        if preferred is not None and find_voice(preferred) is not None:
            return preferred
    voices = list_voices(code)
    return voices[0].id if voices else None


def resolve_voice(voice: str | None, language: str) -> tuple[str | None, VoiceFallback | None]:
    """The id to give espeak-ng for a request, and why the request was not used (if not).

    The returned id always comes from espeak-ng's own list (or is ``None``: espeak-ng's
    built-in default), never from ``voice``.
    """
    fallback_id = default_voice(language)
    if voice is None:
        return fallback_id, None
    info = find_voice(voice)
    if info is None:
        reason = "not a voice espeak-ng lists"
    elif info.rank_for(language) is None:
        reason = f"voice {info.id} does not speak language {language}"
    else:
        return info.id, None
    return fallback_id, VoiceFallback(requested=voice, used=fallback_id, reason=reason)
