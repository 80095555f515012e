"""Faults inside the server: a wedged model, a model out of memory, a dead recogniser.
Each costs the request it hit (a non-fatal error); nothing hangs, nobody is dropped."""

from __future__ import annotations

import threading

import protocol as p
from protocol import ErrorCode, HazardInfo
from runtime import Worker
from server.analysis import AnalysisRequest
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.phone import Phone


class WedgedModelDouble:
    """Test double: a model on a supervised worker whose first call never returns (a
    wedged GPU) and whose second runs out of memory; later calls answer."""

    name = "wedged-double"

    def __init__(self) -> None:
        self.worker = Worker("wedged-model", stall_s=0.3)
        self.wedge = threading.Event()
        self.calls = 0

    async def analyze(self, request: AnalysisRequest) -> p.ObservationMsg | None:
        self.calls += 1
        call = self.calls

        def run() -> p.ObservationMsg:
            if call == 1:
                self.wedge.wait()  # never set during the test
            if call == 2:
                raise MemoryError("CUDA out of memory (simulated)")
            return p.ObservationMsg(
                frame_seq=request.frame.frame.seq,
                reason=request.reason,
                hazards=[HazardInfo(label="chair", direction="ahead", distance_m=2.0)],
                answer="A chair." if request.question else None,
            )

        return await self.worker.submit(run)


async def test_a_wedged_then_failing_model_costs_only_those_requests(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    model = WedgedModelDouble()
    server = await make_server(model)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    other = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()  # the first look hits the wedged call
    first = await phone.wait_for(lambda m: isinstance(m, p.Error), timeout=5)
    assert first.code == ErrorCode.MODEL_FAILED and not first.fatal  # type: ignore[attr-defined]
    await phone.send(p.Question(text="what is ahead?", id="q1"))  # out of memory
    second = await phone.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "q1", timeout=5)
    assert second.code == ErrorCode.MODEL_FAILED  # type: ignore[attr-defined]
    unsure = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart), timeout=5)
    assert unsure.text == "I'm not sure."  # type: ignore[attr-defined]  # never silence
    await phone.send(p.Question(text="and now?", id="q2"))  # the restarted worker answers
    answer = await phone.wait_for(
        lambda m: (
            isinstance(m, p.SpeechStart) and m.priority == "answer" and "chair" in m.text.lower()
        ),
        timeout=5,
    )
    assert answer is not None and model.worker.restarts == 1
    # The other phone was served all along, and neither was disconnected.
    await other.send(p.Ping(t=1, id="still"))
    await other.wait_for(lambda m: isinstance(m, p.Pong) and m.id == "still")
    assert len(server.sessions) == 2
    model.wedge.set()
    await phone.close()
    await other.close()
