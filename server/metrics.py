"""What the server counts, exposed at ``/metrics`` in Prometheus text format.

Only counts and durations: never user names, tokens or media; label values come
from small fixed sets (lanes, reasons, error codes), and each labelled family
keeps at most ``MAX_LABEL_VALUES`` values (more are counted under ``other``), so
the number of series is bounded whatever clients send.

Cost: counting is a Python integer increment (event-loop code keeps writing
``metrics.frames_received += 1``); durations go into fixed-bucket histograms.
:meth:`ServerMetrics.render` is O(number of series), never O(samples), and is
safe to call from another thread than the one counting.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_LABEL_VALUES = 64
# Seconds: ingest (receive -> validate -> slot) is sub-millisecond.
INGEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# Seconds: vision-language calls take 0.1-10 s, speech 0.05-5 s.
MODEL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# Plain counters kept as attributes: (attribute, help). Exported as seealoud_<attr>_total.
_COUNTERS = (
    ("sessions_total", "Sessions opened."),
    ("frames_received", "Camera frames received and accepted."),
    ("frames_dropped", "Frames superseded by a newer one before the change detector."),
    ("frames_rejected", "Frames refused (too big, undecodable, bad header)."),
    ("detector_fires", "Frames the change detector passed on to the model."),
    ("model_frames_dropped", "Frames superseded while waiting for the model."),
    ("bad_messages", "Malformed client messages."),
    ("handler_crashes", "Session handlers that crashed (closed with 1011)."),
    ("analyses", "Model analyses completed."),
)


class LatencySamples:
    """Durations (seconds): a histogram for ``/metrics`` plus the most recent
    ``capacity`` samples for exact percentiles in :meth:`ServerMetrics.snapshot`
    (a small window, sorted only when a snapshot is asked for)."""

    def __init__(self, histogram: Histogram, capacity: int = 4096) -> None:
        self._histogram = histogram
        self._recent: deque[float] = deque(maxlen=capacity)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._histogram.observe(seconds)
        self._recent.append(seconds)
        self.count += 1

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the recent window, or None if empty."""
        ordered = sorted(list(self._recent))
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    def summary_ms(self) -> dict[str, float | int | None]:
        ordered = sorted(list(self._recent))

        def at(q: float) -> float | None:
            if not ordered:
                return None
            index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
            return round(ordered[index] * 1000, 4)

        return {
            "count": self.count,
            "window": len(ordered),
            "p50_ms": at(0.5),
            "p95_ms": at(0.95),
            "p99_ms": at(0.99),
        }


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _LabelledCounts:
    """Counts by one label, with a bounded number of label values."""

    def __init__(self, name: str, help_text: str, label: str) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.counts: dict[str, int] = {}

    def inc(self, value: str, amount: int = 1) -> None:
        if value not in self.counts and len(self.counts) >= MAX_LABEL_VALUES:
            value = "other"
        self.counts[value] = self.counts.get(value, 0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.help, labels=[self.label])
        for value, count in sorted(dict(self.counts).items()):  # dict(): an atomic copy
            family.add_metric([value], count)
        return family


@dataclass
class ServerMetrics:
    """Process-wide counters and latencies, summed over all sessions.

    Attributes are plain integers for the event loop to increment; the labelled
    counts and histograms have methods (see below). ``registry`` is this
    object's own ``CollectorRegistry`` (never the global one), so several
    servers in one process (tests) do not mix.
    """

    sessions_active: int = 0
    sessions_total: int = 0
    frames_received: int = 0
    frames_dropped: int = 0
    frames_rejected: int = 0
    detector_fires: int = 0
    model_frames_dropped: int = 0
    bad_messages: int = 0
    handler_crashes: int = 0
    analyses: int = 0
    registry: CollectorRegistry = field(default_factory=CollectorRegistry, repr=False)
    ingest: LatencySamples = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._labelled = {
            "auth": _LabelledCounts(
                "seealoud_auth_failures", "Failed logins, by reason.", "reason"
            ),
            "rate": _LabelledCounts(
                "seealoud_rate_limited", "Requests refused by a rate limit or cap.", "kind"
            ),
            "utterances": _LabelledCounts("seealoud_utterances", "Utterances spoken.", "lane"),
            "stale": _LabelledCounts(
                "seealoud_stale_drops", "Work dropped because it was too old.", "kind"
            ),
            "detector": _LabelledCounts(
                "seealoud_detector_decisions", "Change-detector decisions.", "reason"
            ),
            "errors": _LabelledCounts("seealoud_errors", "Error messages sent to clients.", "code"),
            "audio_dropped": _LabelledCounts(
                "seealoud_audio_dropped", "Stretches of microphone audio not listened to.", "reason"
            ),
            "audio_dropped_ms": _LabelledCounts(
                "seealoud_audio_dropped_milliseconds",
                "Milliseconds of microphone audio not listened to.",
                "reason",
            ),
        }
        self._ingest_histogram = Histogram(
            "seealoud_ingest_seconds",
            "Receive -> validate -> newest-frame slot, per client message.",
            buckets=INGEST_BUCKETS,
            registry=self.registry,
        )
        self._model_histogram = Histogram(
            "seealoud_model_seconds",
            "Model call latency, by backend and task.",
            labelnames=("backend", "task"),
            buckets=MODEL_BUCKETS,
            registry=self.registry,
        )
        self._model_series: set[tuple[str, str]] = set()
        self.ingest = LatencySamples(self._ingest_histogram)
        self.registry.register(_Counters(self))
        ProcessCollector(registry=self.registry)

    # -- labelled counts (call from the event loop) --

    @property
    def auth_failures(self) -> int:
        """All failed logins; ``metrics.auth_failures += 1`` counts one as ``unspecified``."""
        return sum(self._labelled["auth"].counts.values())

    @auth_failures.setter
    def auth_failures(self, value: int) -> None:
        self._labelled["auth"].inc("unspecified", value - self.auth_failures)

    def auth_failure(self, reason: str = "bad-token") -> None:
        """A failed login: ``bad-token``, ``rate-limited``, ``bad-hello``..."""
        self._labelled["auth"].inc(reason)

    @property
    def rate_limited(self) -> int:
        """All refusals by a limit; ``metrics.rate_limited += 1`` counts one as
        ``unspecified`` (prefer :meth:`rate_limited_by` with the kind)."""
        return sum(self._labelled["rate"].counts.values())

    @rate_limited.setter
    def rate_limited(self, value: int) -> None:
        self._labelled["rate"].inc("unspecified", value - self.rate_limited)

    def rate_limited_by(self, kind: str) -> None:
        """A refusal by a limit: ``login``, ``frames``, ``audio``, ``questions``,
        ``settings``, ``sessions-account``, ``sessions-address``..."""
        self._labelled["rate"].inc(kind)

    def audio_dropped(self, reason: str, ms: float) -> None:
        """Microphone audio not listened to (faster than real time, speech budget,
        busy decoder): one event and its length, by reason."""
        self._labelled["audio_dropped"].inc(reason)
        self._labelled["audio_dropped_ms"].inc(reason, max(0, round(ms)))

    def utterance(self, lane: str) -> None:
        """An utterance spoken in ``lane`` (``hazard``, ``answer``, ``sign``, ...)."""
        self._labelled["utterances"].inc(lane)

    def stale_drop(self, kind: str) -> None:
        """Something dropped as too old, by what it was (an utterance's lane: ``hazard``,
        ``sign``, ``scene``)."""
        self._labelled["stale"].inc(kind)

    def detector_decision(self, reason: str) -> None:
        """One change-detector decision, by its reason."""
        self._labelled["detector"].inc(reason)

    def error(self, code: str) -> None:
        """An ``error`` message sent to a client, by its code."""
        self._labelled["errors"].inc(code)

    def count(self, family: str) -> dict[str, int]:
        """A copy of one labelled family's counts: ``auth``, ``rate``, ``utterances``,
        ``stale``, ``detector``, ``errors``, ``audio_dropped`` or ``audio_dropped_ms``."""
        return dict(self._labelled[family].counts)

    @property
    def errors(self) -> dict[str, int]:
        """Errors sent, by code (a copy)."""
        return self.count("errors")

    @property
    def decisions(self) -> dict[str, int]:
        """Change-detector decisions, by reason (a copy)."""
        return self.count("detector")

    # -- latencies (thread-safe: call from any thread) --

    def model_latency(self, backend: str, seconds: float, *, task: str = "vision") -> None:
        """One model call: ``backend`` e.g. ``transformers``, ``openai``, ``faster-whisper``,
        ``espeak-ng``; ``task`` e.g. ``vision``, ``asr``, ``tts``."""
        series = (backend, task)
        if series not in self._model_series:
            if len(self._model_series) >= MAX_LABEL_VALUES:
                series = ("other", "other")
            self._model_series.add(series)
        self._model_histogram.labels(*series).observe(seconds)

    # -- output --

    def render(self) -> bytes:
        """The Prometheus text exposition (``CONTENT_TYPE``); O(series)."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready view for the benchmarks (sorts at most 4096 ingest samples)."""
        return {
            "sessions_active": self.sessions_active,
            "sessions_total": self.sessions_total,
            "auth_failures": self.auth_failures,
            **{name: getattr(self, name) for name, _ in _COUNTERS if name != "sessions_total"},
            "ingest": self.ingest.summary_ms(),
            "utterances": self.count("utterances"),
            "stale_drops": self.count("stale"),
            "detector_decisions": self.count("detector"),
            "errors": self.count("errors"),
            "rate_limited": self.rate_limited,
            "rate_limited_by": self.count("rate"),
            "audio_dropped": self.count("audio_dropped"),
            "rss_bytes": rss_bytes(),
        }


class _Counters(Collector):
    """Reads the plain attributes at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        m = self._metrics
        yield GaugeMetricFamily(
            "seealoud_sessions_active", "Sessions open now.", value=m.sessions_active
        )
        for name, help_text in _COUNTERS:
            yield CounterMetricFamily(f"seealoud_{name}", help_text, value=getattr(m, name))
        for labelled in m._labelled.values():
            yield labelled.family()


def read_metrics(text: str) -> dict[str, float]:
    """Unlabelled samples of a ``/metrics`` page by name without the ``seealoud_`` prefix
    and ``_total`` suffix (``frames_received``, ``sessions_active``): for tests and
    benchmarks that read the page a Prometheus server would."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels:
                continue
            name = sample.name.removeprefix("seealoud_").removesuffix("_total")
            values[name] = sample.value
    return values
