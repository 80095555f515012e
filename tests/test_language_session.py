"""A language the loaded speech model cannot hear: refused to the caregiver, explained
to the user in their language, never transcribed as nonsense."""

from __future__ import annotations

import protocol as p
from protocol import ErrorCode
from speech.asr import SpeechRecognizer
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone


async def test_a_language_the_speech_model_cannot_hear(
    make_server: ServerFactory, accounts: Accounts, asr_model: SpeechRecognizer
) -> None:
    assert not asr_model.can_hear("zh")  # tiny.en: English only
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), asr=asr_model)
    carer = await Phone.open(ws_url(server), accounts.caregiver_token)
    await carer.send(p.SettingsUpdate(user="alice", values={"language": "zh"}, id="zh"))
    refused = await carer.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "zh")
    assert refused.code == ErrorCode.INVALID_SETTINGS  # type: ignore[attr-defined]
    assert "multilingual" in refused.message  # type: ignore[attr-defined]
    # Stored anyway, by the operator's CLI (which cannot know the server's model):
    await server.settings_store_update("alice", {"language": "zh"})
    await carer.send(p.SettingsGet(user="alice", id="g"))
    shown = await carer.wait_for(lambda m: isinstance(m, p.Settings) and m.id == "g")
    assert any("not be understood" in w for w in shown.warnings)  # type: ignore[attr-defined]
    assert not any(".." in w for w in shown.warnings)  # type: ignore[attr-defined]
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.send(p.AudioStart(id="a"))
    told = await phone.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "a")
    assert told.code == ErrorCode.CAPABILITY_UNAVAILABLE  # type: ignore[attr-defined]
    assert told.message == "这个语言的语音提问需要另一个语音模型；请输入文字提问。"  # type: ignore[attr-defined]
    await phone.send(p.AudioChunk(seq=0, ts=0, payload=bytes(32_000)))
    await phone.send(p.AudioStop(id="a"))
    await phone.send(p.Ping(t=1, id="end"))
    await phone.wait_for(lambda m: isinstance(m, p.Pong) and m.id == "end")
    assert not phone.of(p.TranscriptMsg)  # nothing was transcribed as English nonsense
    await carer.close()
    await phone.close()


async def test_a_phone_switched_to_a_language_it_cannot_hear_is_told_at_once(
    make_server: ServerFactory, accounts: Accounts, asr_model: SpeechRecognizer
) -> None:
    """Found by a blind-user pass: French set from the command line, on tiny.en, was
    said only as "Langue : Français."; the user learnt that speaking would not work
    only by not being understood. Said with the change, in the new language."""
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), asr=asr_model)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await server.settings_store_update("alice", {"language": "fr"})
    pushed = await phone.wait_for(lambda m: isinstance(m, p.Settings))
    assert pushed.summary.startswith("Langue : Français.")  # type: ignore[attr-defined]
    assert pushed.summary.endswith(  # type: ignore[attr-defined]
        "Les questions parlées dans cette langue demandent un autre modèle vocal ; "
        "tapez votre question."
    )
    await server.settings_store_update("alice", {"language": "en"})  # back to one it hears
    back = await phone.wait_for(lambda m: isinstance(m, p.Settings) and m is not pushed)
    assert "speech model" not in back.summary  # type: ignore[attr-defined]
    await phone.close()
