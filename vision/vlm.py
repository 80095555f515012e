"""Vision-language model backends behind one interface.

- ``TransformersBackend``: any ``AutoModelForImageTextToText`` checkpoint in
  process (default Qwen/Qwen3-VL-8B-Instruct), for the user's own laptop.
- ``OpenAIBackend``: an OpenAI-compatible chat-completions server (vLLM,
  SGLang, Ollama, ``transformers serve``), for organisations that outgrow one
  laptop. The engine does the batching; we send one image per request.

Both stream text as it is produced (``on_text``), stop at a deadline or on
cancel and return what they have, marked partial, with timings split into
preprocess, prefill (time to first token) and decode.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from vision.choice import (
    QWEN3_VL,
    DeviceInventory,
    ModelChoice,
    choose_model,
    default_models_dir,
    local_weights,
)
from vision.errors import BackendError, ModelUnavailable
from vision.prompts import Prompt
from vision.weights import (
    LoadProgress,
    fetch,
    hub_unreachable,
    missing_weights_message,
    no_model_message,
    shown_model,
)
from vision.worker import ModelWorker, image_worker

log = logging.getLogger("seealoud.vlm")

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
TextCallback = Callable[[str], None]


def shown_url(url: str) -> str:
    """An engine's URL without what may be secret in it (user, password, query)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "engine"
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(kw_only=True)
class GenerationOptions:
    """Per-call limits.

    Attributes:
        max_new_tokens: Cap on the answer's length (the JSON answer is 40-120).
        deadline_s: Wall-clock budget from the call; generation stops there and
            returns what it has, marked partial.
        long_side: The image is resized so its longer side is this many pixels;
            latency grows fast with resolution (448 is ~140 image tokens).
        min_new_tokens: Force the output length (benchmarks only).
    """

    max_new_tokens: int = 160
    deadline_s: float = 2.0
    long_side: int = 448
    min_new_tokens: int | None = None


@dataclass(kw_only=True)
class Generation:
    """What one model call produced, and where its time went."""

    text: str = ""
    stop: str = "eos"  # eos | max-tokens | deadline | cancelled
    preprocess_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    image_tokens: int = 0
    output_tokens: int = 0

    @property
    def partial(self) -> bool:
        return self.stop in ("deadline", "cancelled")


class VlmBackend(Protocol):
    """What the vision engine needs from a backend."""

    name: str
    progress: LoadProgress

    def load(self) -> None:
        """Load (blocking; call off the event loop). Raises ``ModelUnavailable``."""
        ...

    async def generate(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        options: GenerationOptions,
        cancel: threading.Event,
        on_text: TextCallback | None = None,
    ) -> Generation:
        """One call; never blocks the event loop."""
        ...

    async def close(self) -> None: ...


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """Scale so the longer side is ``long_side`` (never up), in RGB."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    scale = long_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


# --- in-process transformers ----------------------------------------------------


@dataclass(kw_only=True)
class TransformersOptions:
    """How to load the in-process model.

    Attributes:
        model: Hub id or local path of an image-text-to-text checkpoint; None
            chooses a Qwen3-VL by the machine (``vision.choice``).
        device: ``auto`` (CUDA if present), ``cuda``, ``cuda:1``, ``cpu``.
        quantization: ``None``, ``4bit`` or ``8bit`` (bitsandbytes; for 8-16 GB
            laptop GPUs: the 8B model needs ~17 GB in bf16, ~6 GB in 4-bit).
        models_dir: Folder searched for downloaded models by name (e.g.
            ``models_dir/Qwen3-VL-2B-Instruct``) before the Hugging Face cache;
            None = ``vision.choice.default_models_dir()``.
        attn_implementation: e.g. ``sdpa`` or ``flash_attention_2``; None = default.
        warmup: Run one tiny generation after loading, so the first user
            request does not pay for kernel compilation and allocation.
        stall_after_deadline_s: A generation still running this long after its
            own deadline (``GenerationOptions.deadline_s``) is taken for a wedged
            GPU: its thread is abandoned and a fresh one serves the next frame.
            Generation stops itself at the deadline, so only a stuck kernel or
            driver gets this far; a few seconds spare a slow last token.
    """

    model: str | None = None
    device: str = "auto"
    quantization: str | None = None
    models_dir: Path | None = None
    attn_implementation: str | None = None
    warmup: bool = True
    stall_after_deadline_s: float = 3.0


class TransformersBackend:
    """Qwen3-VL (or another image-text-to-text model) through transformers."""

    def __init__(
        self,
        options: TransformersOptions | None = None,
        *,
        inventory: Callable[[], DeviceInventory] = DeviceInventory.detect,
    ) -> None:
        self.options = options or TransformersOptions()
        self.name = f"transformers:{shown_model(self.options.model or 'auto')}"
        self.progress = LoadProgress()
        self.choice: ModelChoice | None = None
        self._inventory = inventory
        # Supervised: a generation stuck past its deadline (a wedged GPU) is abandoned
        # and a fresh thread serves the next frame; the limit follows each call's deadline.
        grace = self.options.stall_after_deadline_s
        self._worker = ModelWorker("vlm", stall_s=GenerationOptions().deadline_s + grace)
        self._model: Any = None
        self._processor: Any = None
        self._device = "cpu"
        self._lock = threading.Lock()

    # loading ---------------------------------------------------------------

    def load(self) -> None:
        """Choose (unless configured), find or download, load, warm up. Blocking.

        Raises ``ModelUnavailable`` with the fix; ``self.progress`` follows along.
        """
        try:
            self._load()
        except BaseException:
            self.progress.stage = "failed"
            raise
        self.progress.stage = "ready"

    def _load(self) -> None:
        o = self.options
        models_dir = o.models_dir if o.models_dir is not None else default_models_dir()
        self.progress.stage = "checking-weights"
        hub = _HubOnce()
        self._weights_or_fail(models_dir, hub)  # before torch: it takes seconds to import
        self.progress.stage = "importing"
        try:
            import torch
        except ImportError as exc:
            raise ModelUnavailable(
                "the in-process model needs torch and transformers (torch is missing): "
                "pip install 'seealoud[vlm]'"
            ) from exc
        self.progress.stage = "choosing"
        choice = choose_model(
            model=o.model,
            device=o.device,
            quantization=o.quantization,
            inventory=self._inventory(),
            models_dir=models_dir,
            hub=hub,
        )
        self.choice, self.name = choice, f"transformers:{shown_model(choice.model)}"
        self.progress.model = choice.model
        log.info("vision model: %s", choice.reason)
        path = choice.local_path or fetch(
            choice.model,
            self.progress,
            models_dir=models_dir,
            device=choice.device,
            quantization=choice.quantization,
            hub=hub,
        )
        self.progress.stage = "loading"
        try:  # only now: transformers takes seconds to import, and a failure above is enough
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise ModelUnavailable(
                f"the in-process model needs transformers ({exc.name} is missing): "
                "pip install 'seealoud[vlm]'"
            ) from exc
        route_library_logs()
        device = choice.device
        dtype = getattr(torch, choice.dtype)
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            dtype = torch.float16  # older GPUs (choice gives bf16 only on CUDA)
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if o.attn_implementation:
            kwargs["attn_implementation"] = o.attn_implementation
        if choice.quantization:
            kwargs["quantization_config"] = _quantization(choice.quantization, dtype)
            kwargs["device_map"] = device
        started = time.monotonic()
        log.info(
            "loading %s from %s on %s (%s%s)",
            choice.model,
            path,
            device,
            str(dtype).split(".")[-1],
            f", {choice.quantization}" if choice.quantization else "",
        )
        try:
            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            model: Any = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
            if not choice.quantization:
                model = model.to(device)
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelUnavailable(
                f"{choice.model} does not fit in GPU memory: try --quantization 4bit, or a "
                "smaller model such as Qwen/Qwen3-VL-4B-Instruct or Qwen/Qwen3-VL-2B-Instruct"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(
                f"{path} is not a usable checkpoint of {choice.model}: "
                f"{str(exc).splitlines()[0][:200]}"
            ) from exc
        model.eval()
        self._model, self._processor, self._device = model, processor, device
        log.info("loaded %s in %.1f s", choice.model, time.monotonic() - started)
        if o.warmup:
            self._generate_sync(
                Image.new("RGB", (64, 64), (128, 128, 128)),
                Prompt(system="", user="Hi"),
                GenerationOptions(max_new_tokens=2, deadline_s=60),
                threading.Event(),
                None,
            )

    def _weights_or_fail(self, models_dir: Path, hub: _HubOnce) -> None:
        """Raise ``ModelUnavailable`` now when no weights can be had: none on disk for the
        model asked (or, with none asked, for any Qwen3-VL) and the hub unreachable.

        Runs before torch and transformers are imported (6-12 s of a failing start-up
        offline were those imports). A path is left to loading, which names what is
        wrong with it; with weights on disk, the choice comes next as usual.
        """
        route_library_logs()  # huggingface_hub's warnings, once each, in the server's format
        o = self.options
        if o.model is not None:
            path = Path(o.model).expanduser()
            if path.exists() or o.model.startswith((".", "/", "~")) or o.model.count("/") != 1:
                return
            if local_weights(o.model, models_dir) is not None:
                return
            why = hub()
            if why is not None:
                device = o.device if o.device != "auto" else ("cuda" if _has_gpu() else "cpu")
                raise ModelUnavailable(
                    missing_weights_message(
                        o.model, why, models_dir, device=device, quantization=o.quantization
                    )
                )
            return
        if any(local_weights(c.model, models_dir) is not None for c in QWEN3_VL):
            return
        why = hub()
        if why is not None:
            raise ModelUnavailable(no_model_message(why, models_dir))

    # generation -------------------------------------------------------------

    async def generate(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        options: GenerationOptions,
        cancel: threading.Event,
        on_text: TextCallback | None = None,
    ) -> Generation:
        if self._model is None:
            raise ModelUnavailable("the model is not loaded")
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + options.deadline_s
        self._worker.stall_s = options.deadline_s + self.options.stall_after_deadline_s

        def emit(text: str) -> None:
            if on_text is not None:
                loop.call_soon_threadsafe(on_text, text)

        return await self._worker.submit(
            lambda: self._generate_sync(image, prompt, options, cancel, emit, deadline),
            deadline=deadline,
        )

    def _generate_sync(
        self,
        image: Image.Image,
        prompt: Prompt,
        options: GenerationOptions,
        cancel: threading.Event,
        emit: TextCallback | None,
        deadline: float | None = None,
    ) -> Generation:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        started = time.perf_counter()
        stop_at = deadline if deadline is not None else time.monotonic() + options.deadline_s
        processor = self._processor
        image = resize_long_side(image, options.long_side)
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": prompt.system}]}
            )
        messages.append(
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]}
        )
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[image], return_tensors="pt").to(self._device)
        prompt_len = int(inputs["input_ids"].shape[1])
        image_token_id = getattr(self._model.config, "image_token_id", None)
        image_tokens = int((inputs["input_ids"] == image_token_id).sum()) if image_token_id else 0
        prepared = time.perf_counter()
        tokenizer = processor.tokenizer
        state: dict[str, Any] = {"first": None, "ids": [], "sent": 0, "stop": None}

        class Streamer(BaseStreamer):
            """Decodes new tokens as they come and passes new text on."""

            def put(self, value: Any) -> None:
                if state["first"] is None and value.dim() == 2 and value.shape[-1] > 1:
                    return  # generate() first hands over the prompt
                if state["first"] is None:
                    state["first"] = time.perf_counter()
                state["ids"].extend(int(v) for v in value.reshape(-1).tolist())
                decoded = tokenizer.decode(state["ids"], skip_special_tokens=True)
                if (
                    emit is not None
                    and len(decoded) > state["sent"]
                    and not decoded.endswith("\ufffd")
                ):
                    emit(decoded[state["sent"] :])
                    state["sent"] = len(decoded)

            def end(self) -> None:
                pass

        class Deadline(StoppingCriteria):
            """Stops at the deadline or when the caller cancels."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if cancel.is_set():
                    state["stop"] = "cancelled"
                elif time.monotonic() >= stop_at:
                    state["stop"] = "deadline"
                flag = state["stop"] is not None
                return torch.full(
                    (input_ids.shape[0],), flag, dtype=torch.bool, device=input_ids.device
                )

        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": options.max_new_tokens,
            "do_sample": False,
            "streamer": Streamer(),
            "stopping_criteria": StoppingCriteriaList([Deadline()]),
        }
        if options.min_new_tokens:
            gen_kwargs["min_new_tokens"] = options.min_new_tokens
        # A thread abandoned by the worker's supervision may still hold the model: wait
        # for it only until this call's own deadline, then fail this request (not hang).
        if not self._lock.acquire(timeout=max(0.0, stop_at - time.monotonic())):
            raise BackendError("the model is still stuck on an earlier, abandoned call")
        try:
            with torch.inference_mode():
                output = self._model.generate(**inputs, **gen_kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            raise BackendError("out of GPU memory during generation") from exc
        finally:
            self._lock.release()
        finished = time.perf_counter()
        new_ids = output[0, prompt_len:]
        answer = tokenizer.decode(new_ids, skip_special_tokens=True)
        first = state["first"] or finished
        stop = state["stop"] or ("max-tokens" if len(new_ids) >= options.max_new_tokens else "eos")
        return Generation(
            text=answer,
            stop=stop,
            preprocess_ms=(prepared - started) * 1000,
            prefill_ms=(first - prepared) * 1000,
            decode_ms=(finished - first) * 1000,
            image_tokens=image_tokens,
            output_tokens=len(new_ids),
        )

    async def close(self) -> None:
        self._worker.close()


class _HubOnce:
    """``hub_unreachable`` asked at most once per load (each probe may take 2 s)."""

    def __init__(self) -> None:
        self._asked = False
        self._why: str | None = None

    def __call__(self) -> str | None:
        if not self._asked:
            self._why, self._asked = hub_unreachable(), True
        return self._why


def _has_gpu() -> bool:
    """Whether an NVIDIA driver lists a GPU, without importing torch (advice only)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _quantization(kind: str, dtype: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise ModelUnavailable(
            "4-bit/8-bit loading needs bitsandbytes and a CUDA GPU: pip install bitsandbytes"
        ) from exc
    if kind == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4"
        )
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelUnavailable(f"unknown quantization {kind!r}: use 4bit or 8bit")


def route_library_logs() -> None:
    """Let the hub's and transformers' log records reach the server's handler once.

    huggingface_hub adds its own stderr handler and also propagates to the root
    logger, so each of its warnings was printed twice; transformers keeps its own
    handler and does not propagate, so its lines ignored the server's format.
    """
    with contextlib.suppress(ImportError):
        import huggingface_hub  # noqa: F401  (it installs its handler on import)
    for name in ("huggingface_hub", "transformers"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


# --- OpenAI-compatible HTTP -----------------------------------------------------


@dataclass(kw_only=True)
class HttpOptions:
    """How to reach an OpenAI-compatible engine.

    Attributes:
        base_url: e.g. ``http://gpu-server:8000/v1`` (vLLM, SGLang), or
            ``http://localhost:11434/v1`` (Ollama).
        model: The model name the engine serves (None: Qwen3-VL-8B-Instruct).
        api_key: Bearer token, if the engine wants one (never logged); by
            default read from ``SEEALOUD_VLM_API_KEY``.
        connect_timeout_s: Give up connecting after this long.
        max_concurrency: Requests in flight at once; the engine batches them.
        retries: Retries on connection errors only (a request that reached the
            engine is never repeated: it may already be running).
        backoff_s: First retry delay; doubles each time.
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = DEFAULT_MODEL
    api_key: str | None = field(default_factory=lambda: os.environ.get("SEEALOUD_VLM_API_KEY"))
    connect_timeout_s: float = 2.0
    max_concurrency: int = 8
    retries: int = 2
    backoff_s: float = 0.2

    def __post_init__(self) -> None:
        if self.model is None:  # the server's "no model given"
            self.model = DEFAULT_MODEL

    def __repr__(self) -> str:
        key = "<set>" if self.api_key else None
        return f"HttpOptions(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"


class OpenAIBackend:
    """Chat completions with an image data URL, streamed."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        self.name = f"openai:{shown_url(self.options.base_url)}"
        self.progress = LoadProgress(model=self.options.model or DEFAULT_MODEL)
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None

    def load(self) -> None:
        try:
            import httpx  # noqa: F401
        except ImportError as exc:
            self.progress.stage = "failed"
            raise ModelUnavailable(
                "the HTTP backend needs httpx: pip install 'seealoud[http]'"
            ) from exc
        # Built here, on the loader's thread: making the client (its TLS context) took
        # 280 ms on a busy machine, too long for the event loop at the first frame.
        self._ensure_client()
        self.progress.stage = "ready"

    def _ensure_client(self) -> Any:
        import httpx

        if self._client is None:
            o = self.options
            headers = {"Authorization": f"Bearer {o.api_key}"} if o.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=o.base_url.rstrip("/"),
                headers=headers,
                timeout=httpx.Timeout(
                    connect=o.connect_timeout_s, read=None, write=10.0, pool=o.connect_timeout_s
                ),
                limits=httpx.Limits(
                    max_connections=o.max_concurrency, max_keepalive_connections=o.max_concurrency
                ),
            )
            self._slots = asyncio.Semaphore(o.max_concurrency)
        return self._client

    async def generate(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        options: GenerationOptions,
        cancel: threading.Event,
        on_text: TextCallback | None = None,
    ) -> Generation:
        import httpx

        client = self._ensure_client()
        assert self._slots is not None
        started = time.perf_counter()
        deadline = time.monotonic() + options.deadline_s
        data_url = await image_worker().submit(
            lambda: _jpeg_data_url(image, options.long_side), deadline=deadline
        )
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url}},
                    {"type": "text", "text": prompt.user},
                ],
            }
        )
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": messages,
            "max_tokens": options.max_new_tokens,
            "temperature": 0,
            "stream": True,
        }
        if options.min_new_tokens:
            body["min_tokens"] = options.min_new_tokens  # vLLM's extension
        prepared = time.perf_counter()
        result = Generation(preprocess_ms=(prepared - started) * 1000)
        parts: list[str] = []
        first: float | None = None
        async with self._slots:
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    response = await self._post_with_retries(client, body)
                    try:
                        if response.status_code >= 400:
                            detail = (await response.aread())[:200].decode("utf-8", "replace")
                            raise BackendError(
                                f"model server answered {response.status_code}: {detail}"
                            )
                        async for line in response.aiter_lines():
                            if cancel.is_set():
                                result.stop = "cancelled"
                                break
                            delta, finish = _sse_delta(line)
                            if delta:
                                if first is None:
                                    first = time.perf_counter()
                                parts.append(delta)
                                result.output_tokens += 1
                                if on_text is not None:
                                    on_text(delta)
                            if finish == "length":
                                result.stop = "max-tokens"
                    finally:
                        await response.aclose()
            except TimeoutError:
                result.stop = "deadline"
            except httpx.HTTPError as exc:
                raise BackendError(f"model server error: {type(exc).__name__}") from exc
        finished = time.perf_counter()
        first = first or finished
        result.text = "".join(parts)
        result.prefill_ms = (first - prepared) * 1000
        result.decode_ms = (finished - first) * 1000
        return result

    async def _post_with_retries(self, client: Any, body: dict[str, Any]) -> Any:
        import httpx

        delay = self.options.backoff_s
        for attempt in range(self.options.retries + 1):
            try:
                request = client.build_request("POST", "/chat/completions", json=body)
                return await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.options.retries:
                    raise BackendError(
                        f"cannot reach the model server at {self.options.base_url} "
                        f"({type(exc).__name__}); is vLLM/SGLang running?"
                    ) from exc
                await asyncio.sleep(delay)  # backoff before reconnecting
                delay *= 2
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _loop_deadline(deadline_monotonic: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())


def _jpeg_data_url(image: Image.Image, long_side: int) -> str:
    buf = io.BytesIO()
    resize_long_side(image, long_side).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _sse_delta(line: str) -> tuple[str, str | None]:
    """The text delta and finish reason of one server-sent-events line."""
    if not line.startswith("data:"):
        return "", None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return "", None
    try:
        chunk = json.loads(payload)
        choice = chunk["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return "", None
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ""), choice.get("finish_reason")
