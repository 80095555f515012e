"""Text read aloud: the OCR reader is the source of every word, never the vision model.

"Read this" reads all the text in view, verbatim and in reading order, a few
sentences at a time (Stop pauses it, "go on" continues). Text that runs off an
edge of the frame says which way to move the phone; text too blurred to read
says so, with no guessed words; a page read only in part says that some of
it was too blurred. A sign the vision model reports is spoken in the reader's
words when the reader confirms it, else as "a sign I can't read" (one item
per session, whatever the model called it; see ``server/narrator.py``). OCR
runs on its own worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from protocol import ErrorCode
from runtime import WorkerBusy
from server.context import ServerContext
from server.languages import join_words, language
from server.narrator import Narrator, Utterance
from server.slot import PendingFrame
from vision.reading import TextReading, match_sign, sentences

log = logging.getLogger("seealoud.reading")

READING_CUE_S = 1.0
"""A "read this" with no words for this long says "Reading." first: a blind-user pass
pressed Read text and heard nothing for 12 s (a dense page on a busy 2-core machine),
could not tell the press had worked, and pressed Stop."""


class Reading:
    """One session's text reading; see the module docstring."""

    def __init__(
        self,
        *,
        ctx: ServerContext,
        narrator: Narrator,
        offer: Callable[[Utterance | None], None],
        send_error: Callable[..., Awaitable[None]],
        latest: Callable[[], PendingFrame | None],  # the newest recent frame, or None
        dark: Callable[[], bool] = lambda: False,  # the camera sees nothing (too dark)
        account: str = "",
    ) -> None:
        self.ctx = ctx
        self.account = account
        self.dark = dark
        self.narrator = narrator
        self.offer = offer
        self.send_error = send_error
        self.latest = latest

    async def request(self, intent: str, ref: str | None) -> None:
        """``read`` (everything in view) or ``continue`` (go on after Stop)."""
        if intent == "continue":
            u = self.narrator.continue_reading()
            self.offer(u if u is not None else self.narrator.notice("nothing_to_continue"))
            return
        frame = self.latest()
        if frame is None:  # none recent: never read from where the camera was before
            await self.send_error(
                ErrorCode.NO_FRAME, "no recent camera frame; start the camera", ref=ref
            )
            self.offer(self.narrator.notice("camera_off"))
            return
        if self.dark():  # "I see no text" said of a covered lens is wrong (a blind-user pass)
            self.offer(self.narrator.dark_answer(time.monotonic()))
            return
        task = asyncio.ensure_future(self._read(frame, ref))
        try:
            done, _ = await asyncio.wait({task}, timeout=READING_CUE_S)
            if not done:  # a page takes the reader seconds on a CPU: say it was heard
                self.offer(self.narrator.notice("reading"))
            reading = await task
        finally:
            task.cancel()  # the session ended meanwhile: the reading is not wanted
        if reading is None:
            return
        for u in read_aloud(self.narrator, reading):
            self.offer(u)

    async def signs(self, signs: list[str], frame: PendingFrame) -> None:
        """Speak the signs the vision model reported, in the reader's words."""
        if not self.narrator.talkative():
            return
        reading = await self._read(frame, None, quiet=True)
        read = [match_sign(sign, reading) if reading is not None else None for sign in signs]
        # Readable signs first: an unreadable one beside a readable one is most likely the
        # same sign seen less well, and the narrator then leaves it unsaid.
        for words in sorted(read, key=lambda w: w is None):
            self.offer(
                self.narrator.sign(words, frame_time=frame.received_at, now=frame.received_at)
            )

    async def _read(
        self, frame: PendingFrame, ref: str | None, *, quiet: bool = False
    ) -> TextReading | None:
        services = self.ctx.services
        reader = services.text_if_ready()
        if reader is None:
            if not quiet:
                await self.send_error(
                    ErrorCode.CAPABILITY_UNAVAILABLE, "Text reading is unavailable.", ref=ref
                )
                self.offer(self.narrator.notice("no_reader"))
            return None
        # One reading at a time per account: the reader is one thread for everybody, and
        # an attacker pass kept its queue full from three sessions of one account, so
        # another user's "read this" was refused.
        accounts = self.ctx.reading_accounts
        if self.account in accounts:
            if not quiet:
                await self._busy(ref)
            return None
        accounts.add(self.account)
        try:
            return await services.ocr.submit(lambda: reader.read_jpeg(frame.frame.payload))
        except WorkerBusy:  # everybody's queue is full: nothing failed, ask again
            if not quiet:
                await self._busy(ref)
            return None
        except Exception as exc:  # OCR's native code may raise anything; the session goes on
            log.warning("text reading failed: %s", type(exc).__name__)
            if not quiet:
                await self.send_error(ErrorCode.MODEL_FAILED, "text reading failed", ref=ref)
                # said as what it is: "I'm not sure" after 20 s read as an answer about the text
                self.offer(self.narrator.notice("reading_failed"))
            return None
        finally:
            accounts.discard(self.account)

    async def _busy(self, ref: str | None) -> None:
        await self.send_error(
            ErrorCode.BUSY, "the text reader is busy; ask again in a moment", ref=ref
        )
        self.offer(self.narrator.notice("busy"))


def read_aloud(narrator: Narrator, reading: TextReading) -> list[Utterance]:
    """What "read this" queues for one reading, in the user's language: the text, or
    why there is none; that part of it was too blurred; which way text runs off."""
    out: list[Utterance | None] = []
    blurred = reading.status == "blurred" or (reading.status == "partial" and not reading.lines)
    if blurred:
        out.append(narrator.notice("text_blurred"))
    elif not reading.lines:
        out.append(narrator.notice("no_text"))
    else:
        if reading.status == "partial":
            out.append(narrator.notice("text_partly_blurred"))
        out.append(narrator.read(sentences(reading)))
    if reading.cut_off and not blurred:
        code = narrator.settings.language
        edges = language(code).edges
        named = join_words(code, [edges[e] for e in reading.cut_off if e in edges])
        out.append(narrator.notice("text_cut_off", edges=named))
    return [u for u in out if u is not None]
