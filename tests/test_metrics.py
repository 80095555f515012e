"""The Prometheus exposition: it parses, carries every family, and costs O(series)."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from server.metrics import MAX_LABEL_VALUES, ServerMetrics


def _samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_render_parses_and_counts() -> None:
    m = ServerMetrics()
    m.frames_received += 3
    m.sessions_active += 2
    m.auth_failures += 1  # the attribute style still works
    m.auth_failure("bad-token")
    m.rate_limited_by("login")
    m.rate_limited += 1  # the attribute style still works
    m.audio_dropped("decoder-busy", 1500.4)
    m.utterance("hazard")
    m.utterance("hazard")
    m.stale_drop("warning")
    m.detector_decision("scene-change")
    m.error("bad-message")
    m.ingest.add(0.0003)
    m.model_latency("transformers", 1.5)
    m.model_latency("faster-whisper", 0.3, task="asr")
    s = _samples(m)
    assert s[("seealoud_frames_received_total", ())] == 3
    assert s[("seealoud_sessions_active", ())] == 2
    assert s[("seealoud_auth_failures_total", (("reason", "bad-token"),))] == 1
    assert s[("seealoud_auth_failures_total", (("reason", "unspecified"),))] == 1
    assert m.auth_failures == 2
    assert s[("seealoud_rate_limited_total", (("kind", "login"),))] == 1
    assert s[("seealoud_rate_limited_total", (("kind", "unspecified"),))] == 1
    assert m.rate_limited == 2
    assert s[("seealoud_audio_dropped_total", (("reason", "decoder-busy"),))] == 1
    key = ("seealoud_audio_dropped_milliseconds_total", (("reason", "decoder-busy"),))
    assert s[key] == 1500
    assert s[("seealoud_utterances_total", (("lane", "hazard"),))] == 2
    assert s[("seealoud_stale_drops_total", (("kind", "warning"),))] == 1
    assert s[("seealoud_detector_decisions_total", (("reason", "scene-change"),))] == 1
    assert s[("seealoud_errors_total", (("code", "bad-message"),))] == 1
    assert s[("seealoud_ingest_seconds_bucket", (("le", "0.0005"),))] == 1
    assert s[("seealoud_ingest_seconds_bucket", (("le", "0.00025"),))] == 0
    vision = (("backend", "transformers"), ("le", "2.0"), ("task", "vision"))
    assert s[("seealoud_model_seconds_bucket", vision)] == 1
    assert (
        s[("seealoud_model_seconds_count", (("backend", "faster-whisper"), ("task", "asr")))] == 1
    )
    assert any(name.startswith("process_") for name, _ in s)
    snap = m.snapshot()
    assert snap["frames_received"] == 3 and snap["auth_failures"] == 2
    assert snap["ingest"] == {"count": 1, "window": 1, "p50_ms": 0.3, "p95_ms": 0.3, "p99_ms": 0.3}


def test_each_server_has_its_own_registry() -> None:
    a, b = ServerMetrics(), ServerMetrics()
    a.frames_received += 1
    assert _samples(b)[("seealoud_frames_received_total", ())] == 0


def test_label_values_are_bounded() -> None:
    m = ServerMetrics()
    for i in range(MAX_LABEL_VALUES * 3):
        m.error(f"code-{i}")
        m.model_latency(f"backend-{i}", 0.1)
    s = _samples(m)
    errors = [k for k in s if k[0] == "seealoud_errors_total"]
    models = {k[1] for k in s if k[0] == "seealoud_model_seconds_count"}
    assert len(errors) == MAX_LABEL_VALUES + 1  # the first 64 and "other"
    assert s[("seealoud_errors_total", (("code", "other"),))] == MAX_LABEL_VALUES * 2
    assert len(models) == MAX_LABEL_VALUES + 1


def _best_render_s(m: ServerMetrics) -> float:
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        m.render()
        best = min(best, time.perf_counter() - started)
    return best


def test_render_cost_does_not_grow_with_observations() -> None:
    """The old /metrics sorted up to 100,000 samples per request; the histogram's
    output has the same series after 1 or 200,000 observations, and costs the same
    (best of 7, within a factor of 3 on a noisy shared machine)."""
    m = ServerMetrics()
    m.ingest.add(0.001)
    m.model_latency("transformers", 1.0)
    few = _best_render_s(m)
    series_few = set(_samples(m))
    for i in range(200_000):
        m.ingest.add((i % 1000) * 1e-6)
    m.frames_received += 200_000
    many = _best_render_s(m)
    assert set(_samples(m)) == series_few
    assert m.snapshot()["ingest"]["window"] == 4096  # type: ignore[index]
    assert many < 3 * few + 0.002, (few, many)
