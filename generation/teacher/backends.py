"""Teachers: anything with `generate(requests) -> replies`. Two real backends.

LocalTeacher runs a transformers model in process (batched, length-sorted, left-padded).
OpenAITeacher talks to any OpenAI-compatible endpoint with bounded concurrency. A request that fails on its
own (a 4xx, a malformed reply) becomes a reply with `error` set, counted by the caller. A transport failure
(connection, timeout, 408/409/429, 5xx) is retried, and is never handed on as a row: an endpoint that stays
down, or a request that fails every attempt, ends generate() with TeacherUnavailable, to be resumed.
Each teacher carries TeacherOptions (generation.teacher's system prompt, extra body, response format, token-limit
name and sampling parameters); teacher.key(request) hashes the request with the options that are set.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import hashlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    """The teacher cannot be used at all (no key, unreachable endpoint); the message says what to do."""


class TeacherUnavailable(TeacherError):
    """The endpoint stopped answering mid-call; the replies already delivered stay delivered, so resume continues."""


@dataclass(frozen=True)
class TeacherRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs; a tuple so requests are hashable
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...] = ()  # cut the reply before the first of these, as OpenAI's `stop`
    presence_penalty: float = 0.0  # OpenAI semantics: subtracted from the logit of every token already generated
    json_object: bool = False  # the method asks for one JSON object: response_format json_object on the wire (OpenAI protocol)

    def chat(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def key(self, model: str, options: "TeacherOptions | None" = None) -> str:
        """Hash of everything that changes the output (never concurrency or batch size): the model, this request and
        the teacher's options that are set. Teachers call it as teacher.key(request)."""
        payload = {"model": model, **asdict(self)}
        for name in ("stop", "presence_penalty", "json_object"):  # hashed only when set, so older cache entries stay valid
            if not payload[name]:
                del payload[name]
        if options is not None:  # likewise: a teacher with default options keeps every key it had
            payload.update(options.changed())
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class TeacherOptions:
    """What a teacher adds to every request it sends, from generation.teacher (see its help). The defaults send each
    request as it is, and leave every cache key as it was; an option that is set becomes part of every key."""
    system_prompt: str = ""  # a first system message; a request's own system message follows it in the same message
    extra_body: dict = field(default_factory=dict)  # merged into the JSON body at top level (the openai client's extra_body=)
    response_format: dict = field(default_factory=dict)  # OpenAI's response_format, e.g. {"type": "json_object"}
    token_limit_param: str = "max_tokens"  # or "max_completion_tokens" (reasoning models refuse max_tokens)
    sampling_params: str = "send"  # "omit": no temperature, top_p, presence_penalty or stop on the wire

    def changed(self) -> dict:
        """The options that differ from the defaults (what they add to a cache key)."""
        default = asdict(TeacherOptions())
        return {k: v for k, v in asdict(self).items() if v != default[k]}

    def chat(self, r: TeacherRequest) -> list[dict]:
        """r's messages, the system prompt first: before a system message r has (one message, as many chat templates
        accept only one), else as a message of its own."""
        messages = r.chat()
        if not self.system_prompt:
            return messages
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": f"{self.system_prompt}\n\n{messages[0]['content']}"}] + messages[1:]
        return [{"role": "system", "content": self.system_prompt}] + messages

    def body(self, model: str, r: TeacherRequest) -> dict:
        """The JSON body of r's chat-completions request. With sampling_params 'omit', r.stop is applied to the reply
        instead (cut_at_stop); extra_body is merged at the top level, as the openai client's extra_body= is."""
        body = {"model": model, "messages": self.chat(r), self.token_limit_param: r.max_tokens, "seed": r.seed}
        if self.sampling_params == "send":
            body.update(temperature=r.temperature, top_p=r.top_p)
            if r.stop:
                body["stop"] = list(r.stop)
            if r.presence_penalty:
                body["presence_penalty"] = r.presence_penalty
        if self.response_format:  # the teacher's own format wins over a method's JSON request
            body["response_format"] = self.response_format
        elif r.json_object:
            body["response_format"] = {"type": "json_object"}
        return {**body, **self.extra_body}


def completion_reply(data: bytes | dict, r: TeacherRequest, options: TeacherOptions) -> TeacherReply:
    """The reply in a chat-completions response body (JSON bytes or parsed); malformed_reply when it holds none."""
    try:
        body = json.loads(data) if isinstance(data, (bytes, str)) else data
        choice = body["choices"][0]
        text, finish = choice["message"]["content"] or "", choice.get("finish_reason") or "stop"
        usage = body.get("usage") or {}
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return TeacherReply("", "error", error="malformed_reply")
    if not isinstance(text, str):
        return TeacherReply("", "error", error="malformed_reply")
    if options.sampling_params == "omit" and r.stop:  # stop was not sent: applied here, as the endpoint would
        text, cut = cut_at_stop(text, r.stop)
        finish = "stop" if cut else finish
    return TeacherReply(text=text, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """text before the first of the stop strings, as OpenAI's `stop` leaves it, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass
class TeacherReply:
    text: str
    finish_reason: str  # "stop", "length" or "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    cached: bool = False
    attempts: int = 1
    attempt_errors: tuple[str, ...] = ()  # why each earlier attempt failed (the retries, by reason); not cached
    batch: bool = False  # answered by a Batch API job (priced at the batch price); not cached


OnReply = Callable[[int, TeacherReply], None]
OnSend = Callable[[int, int], None]  # (index, attempt number from 1)


class Teacher(Protocol):
    model: str
    options: TeacherOptions
    concurrent: bool  # generate() may run in several threads at once (sharing one concurrency limit)

    def key(self, request: TeacherRequest) -> str:
        """The request's cache key with this teacher's model and options (what rows record as the request hash)."""

    def generate(self, requests: list[TeacherRequest], desc: str = "teacher", on_reply: OnReply | None = None,
                 on_send: OnSend | None = None) -> list[TeacherReply]:
        """Replies in request order; on_send(index, attempt) is called just before each attempt goes out (the caller
        records it durably, so a kill while it is in flight still counts it), on_reply(index, reply) once per request
        with its final reply (its earlier attempts' errors in reply.attempt_errors)."""

    def prepaid(self, keys: list[str]) -> set[str]:
        """Of these keys, those already paid for and on their way (a batch job a killed run submitted)."""

    def cancel(self) -> None:
        """Stop the calls under way in other threads (concurrent teachers)."""

    def close(self) -> None: ...


class LocalTeacher:
    """A transformers causal LM with a chat template, generating in length-sorted batches."""
    concurrent = False  # one model, one call at a time

    def __init__(self, model_path: str, model_name: str, batch_size: int, num_threads: int, system_prompt: str = "",
                 device: str = "cpu", dtype: str = "float32", attn: str = "", static_cache: bool = False):
        """system_prompt: the only teacher option a local model honours (the others shape an HTTP request).
        device, dtype, attn: where the model runs (resolved by the caller). static_cache: generate() with a static KV
        cache (the same replies; on a GPU transformers compiles the decoding step for it)."""
        self.model = model_name
        self.options = TeacherOptions(system_prompt=system_prompt)
        self.model_path = model_path
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.device, self.dtype, self.attn, self.static_cache = device, dtype, attn, static_cache
        self.lm = None  # loaded on the first request, so a run served from the cache never loads it
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        if not self.tok.chat_template:
            raise TeacherError(f"teacher {model_name} has no chat template; use an instruct model")
        if system_prompt:
            try:
                self.tok.apply_chat_template([{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}], tokenize=False)
            except Exception as e:  # e.g. Gemma's template: "System role not supported"
                raise TeacherError(f"teacher {model_name}'s chat template refuses a system message ({e}); set "
                                   "generation.teacher.system_prompt: '' or use another model") from None

    def key(self, request: TeacherRequest) -> str:
        return request.key(self.model, self.options)

    def prepaid(self, keys: list[str]) -> set[str]:
        return set()

    def cancel(self) -> None:
        pass

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(self.num_threads)
        self.lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, self.dtype),
                                                       **({"attn_implementation": self.attn} if self.attn else {})).to(self.device).eval()
        eos = self.lm.generation_config.eos_token_id
        self.eos_ids = sorted({self.tok.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])})

    def generate(self, requests: list[TeacherRequest], desc: str = "teacher", on_reply: OnReply | None = None,
                 on_send: OnSend | None = None) -> list[TeacherReply]:
        if self.lm is None:
            self._load()
        prompts = [self.tok.apply_chat_template(self.options.chat(r), tokenize=False, add_generation_prompt=True) for r in requests]
        lengths = [len(self.tok(p, add_special_tokens=False).input_ids) for p in prompts]
        # Same decoding parameters share a batch; within a group longest first, to pad little.
        order = sorted(range(len(requests)), key=lambda i: (self._params(requests[i]), -lengths[i]))
        replies: list[TeacherReply | None] = [None] * len(requests)
        batches = []
        for i in order:
            if batches and len(batches[-1]) < self.batch_size and self._params(requests[batches[-1][0]]) == self._params(requests[i]):
                batches[-1].append(i)
            else:
                batches.append([i])
        with tqdm(total=len(requests), desc=desc, unit="req", leave=False) as bar:
            for batch in batches:
                for i in batch if on_send else ():
                    on_send(i, 1)
                for i, reply in zip(batch, self._generate_batch([prompts[i] for i in batch], requests[batch[0]], [requests[i].seed for i in batch])):
                    replies[i] = reply
                    if on_reply:
                        on_reply(i, reply)
                bar.update(len(batch))
        return replies

    @staticmethod
    def _params(r: TeacherRequest):
        return (r.max_tokens, r.temperature, r.top_p, r.stop, r.presence_penalty)

    def _generate_batch(self, prompts: list[str], params: TeacherRequest, seeds: list[int]) -> list[TeacherReply]:
        import torch
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        processors = [PresencePenalty(params.presence_penalty, enc.input_ids.shape[1])] if params.presence_penalty else []
        if params.temperature > 0 and params.top_p > 0:  # sampling as processors + argmax, each row with its own seed
            processors += [TemperatureLogitsWarper(params.temperature)] + ([TopPLogitsWarper(params.top_p)] if params.top_p < 1 else [])
            processors.append(SeededSampler(seeds, self.lm.device))
        extra = {"stop_strings": list(params.stop), "tokenizer": self.tok} if params.stop else {}
        if self.static_cache:
            extra["cache_implementation"] = "static"
        with torch.inference_mode():
            out = self.lm.generate(**enc, max_new_tokens=params.max_tokens, do_sample=False, temperature=None, top_p=None,
                                   top_k=None, eos_token_id=self.eos_ids, pad_token_id=self.tok.pad_token_id,
                                   logits_processor=LogitsProcessorList(processors), **extra)
        replies = []
        for row, mask in zip(out[:, enc.input_ids.shape[1]:].tolist(), enc.attention_mask.cpu()):
            stop = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
            ids = row if stop is None else row[:stop]
            text, cut = cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), params.stop)
            if cut:  # a stop string ended generation (or appeared before the end): drop it and what follows
                stop = len(ids)
            replies.append(TeacherReply(text=text, finish_reason="length" if stop is None else "stop",
                                        prompt_tokens=int(mask.sum()), completion_tokens=len(ids) + (stop is not None and not cut)))
        return replies

    def close(self) -> None:
        self.lm = None


class SeededSampler:
    """Sampling with one generator per row, seeded by that row's request: Gumbel-max over the (temperature, top_p)
    processed logits draws exactly from their softmax, and a reply depends only on its own request, not on which
    requests share its batch (a resumed run sends only the uncached ones, so its batches differ).

    On a GPU each row's generator lives there too (CUDA's Philox: a row's noise depends only on its seed, so the exactness
    holds, without copying a vocabulary of noise per row per token from the CPU). A seed's noise differs between CPU and
    GPU, so one request may get different replies on the two; the CPU path is unchanged."""

    def __init__(self, seeds: list[int], device="cpu"):
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        u = torch.stack([torch.rand(scores.shape[1], generator=g, device=g.device) for g in self.generators]).clamp_min(1e-20)
        return scores + (-torch.log(-torch.log(u))).to(scores.dtype)


class PresencePenalty:
    """OpenAI's presence penalty for transformers: every token already generated (not the prompt) loses
    `penalty` from its logit, once however often it appeared. Runs before temperature and top_p, as OpenAI's."""

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty, self.prompt_len = penalty, prompt_len

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_len:]
        if generated.shape[1] == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return scores - self.penalty * seen


def api_key_from_env(api_key_env: str) -> str:
    """The key, read from the named variable. '' as the name means a server that needs no key."""
    if not api_key_env:
        return "no-key"
    key = os.environ.get(api_key_env, "")
    if not key:
        raise TeacherError(f"environment variable {api_key_env} is not set: export it with your API key, or set "
                           f"generation.teacher.api_key_env: '' for a local server that needs no key")
    return key


UNREACHABLE = "cannot reach the teacher endpoint"


def check_endpoint(base_url: str | None, key: str, timeout_s: float, model: str = "") -> None:
    """TeacherError, naming the fix, when the endpoint does not answer or rejects the key; with `model`, also when the
    endpoint lists its models and that one is not among them."""
    import openai

    where = base_url or "the OpenAI API"
    try:
        with openai.OpenAI(api_key=key, base_url=base_url or None, timeout=min(timeout_s, 10.0), max_retries=0) as client:
            served = [m.id for m in client.models.list()]
    except openai.AuthenticationError:
        raise TeacherError(f"{where} rejected the API key; check the key in the variable named by generation.teacher.api_key_env") from None
    except (openai.APIConnectionError, openai.APITimeoutError) as e:
        raise TeacherError(f"{UNREACHABLE} {where} ({type(e).__name__}); start the server or fix generation.teacher.base_url") from None
    except openai.APIStatusError:
        return  # reachable; some servers do not serve /models
    if model and served and model not in served:
        raise TeacherError(f"generation.teacher.model={model!r} is not served by {where} (it serves {', '.join(sorted(served)[:8])}"
                           f"{' ...' if len(served) > 8 else ''}); fix the name")


def check_replicas(base_urls: list[str], key: str, timeout_s: float, model: str = "") -> list[str]:
    """check_endpoint on each replica ('' or none: the OpenAI API), one line per problem. A replica that does not
    answer while another does is only warned about: a run takes it out until it answers."""
    problems = []
    for url in base_urls or [""]:
        try:
            check_endpoint(url or None, key, timeout_s, model)
        except TeacherError as e:
            problems.append(str(e))
    down = [p for p in problems if UNREACHABLE in p]
    if len(base_urls) > 1 and len(down) < len(base_urls):
        for problem in down:
            log.warning("%s; it is taken out while it fails", problem)
        problems = [p for p in problems if UNREACHABLE not in p]
    return problems


class OpenAITeacher:
    """Any OpenAI-compatible chat endpoint, or several replicas of one: at most max_concurrency requests in flight,
    each to the replica with the fewest outstanding, optional requests/tokens-per-minute limits, retries with
    exponential backoff and jitter honouring Retry-After.

    The hot path is aiohttp, not the openai client: one session while generate() calls are active, its connection pool
    sized to the concurrency, and a request is one json.dumps and one json.loads. The client's request transforms and response
    models cost about 4 ms of CPU per request, which capped a 2-core machine near 250 requests/s (LOG.md, issue 16).
    The openai client stays where it serves: the endpoint check and the Batch API."""

    def __init__(self, model: str, base_url: str | list[str], api_key_env: str, max_concurrency: int, timeout_s: float,
                 max_retries: int, rpm: int = 0, tpm: int = 0, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 on_close: Callable[[], None] | None = None, outage_failures: int = 8, outage_wait_s: float = 300.0,
                 options: TeacherOptions | None = None):
        """base_url: one URL, a list of replicas serving the same model, or '' / [] for api.openai.com."""
        self.model = model
        self.options = options or TeacherOptions()
        self._on_close = on_close  # e.g. stop a server this teacher owns
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_urls = [u.rstrip("/") for u in urls if u] or [(os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")]
        self._key = api_key_from_env(api_key_env)
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.rpm, self.tpm = rpm, tpm
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.outage_failures, self.outage_wait_s = outage_failures, outage_wait_s
        self._lock = threading.Lock()
        self._active = 0  # generate() calls under way, from any thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shared = None  # (session, semaphore, rate limiter, replicas) on the loop
        self._futures: set = set()  # the calls under way, for cancel()

    def key(self, request: TeacherRequest) -> str:
        return request.key(self.model, self.options)

    def prepaid(self, keys: list[str]) -> set[str]:
        return set()

    def check_reachable(self) -> None:
        """Fail before any model loads when no replica answers or one rejects the key; a replica that is down while
        another answers is only warned about (it is taken out until it answers)."""
        problems = check_replicas(self.base_urls, self._key, self.timeout_s)
        if len(self.base_urls) > 1 and len(problems) == len(self.base_urls) and all(UNREACHABLE in p for p in problems):
            raise TeacherError(f"{UNREACHABLE}: none of the {len(problems)} replicas in generation.teacher.base_url answers; "
                               "start them or fix the list")
        if problems:
            raise TeacherError(problems[0])

    concurrent = True  # generate() may be called from several threads at once; they share one concurrency limit

    def generate(self, requests: list[TeacherRequest], desc: str = "teacher", on_reply: OnReply | None = None,
                 on_send: OnSend | None = None) -> list[TeacherReply]:
        """Runs on the teacher's own event loop thread, so calls from several threads at once (a round's overlapped
        stages) share its session, its max_concurrency and its rate limits; on_send and on_reply run on that thread."""
        with self._lock:
            if not self._active:  # the loop lives while some call is active: nothing is left open between calls
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"teacher-{self.model}")
                self._thread.start()
            self._active += 1
            loop = self._loop
            future = asyncio.run_coroutine_threadsafe(self._generate_all(requests, desc, on_reply, on_send), loop)
            self._futures.add(future)
        try:
            return future.result()
        except BaseException:  # e.g. KeyboardInterrupt in the caller: stop this call's requests too
            future.cancel()
            raise
        finally:
            with self._lock:
                self._futures.discard(future)
                self._active -= 1
                if not self._active:
                    asyncio.run_coroutine_threadsafe(self._close_shared(), loop).result()
                    loop.call_soon_threadsafe(loop.stop)
                    self._thread.join()
                    loop.close()

    def cancel(self) -> None:
        """Stop every call under way, from any thread (an overlapped round's Ctrl-C): each raises CancelledError."""
        with self._lock:
            for future in self._futures:
                future.cancel()

    async def _close_shared(self) -> None:
        if self._shared is not None:
            await self._shared[0].close()
            self._shared = None

    def _session(self):
        import ssl

        import aiohttp
        import certifi

        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        for env, header in (("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project")):  # as the openai client
            if os.environ.get(env):
                headers[header] = os.environ[env]
        # certifi's CAs, as the openai client (httpx) uses; its proxies are each replica's (Replica.proxy).
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0, ttl_dns_cache=300,
                                         ssl=ssl.create_default_context(cafile=certifi.where()))
        return aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def _generate_all(self, requests: list[TeacherRequest], desc: str, on_reply: OnReply | None,
                            on_send: OnSend | None) -> list[TeacherReply]:
        if self._shared is None:  # made on the loop, for every call while any is active: one pool, limit and health
            self._shared = (self._session(), asyncio.Semaphore(self.max_concurrency), RateLimiter(self.rpm, self.tpm),
                            Replicas(self.base_urls, self.outage_failures, self.outage_wait_s, self.backoff_s, self.max_backoff_s))
        session, sem, limiter, replicas = self._shared
        unanswered: list[str] = []  # this call's requests that used up their retries while a replica was up
        with tqdm(total=len(requests), desc=desc, unit="req", leave=False) as bar:
            async def one(i: int, r: TeacherRequest) -> TeacherReply:
                settled: list[TeacherReply] = []  # its last attempt's failed reply while no attempt is out
                try:
                    async with sem:
                        reply = await self._with_retries(session, r, limiter, replicas, lambda a: on_send and on_send(i, a), settled, unanswered)
                except (asyncio.CancelledError, TeacherUnavailable):
                    if on_reply and settled:  # stopped between attempts: known unpaid, so the caller's ledger closes it
                        on_reply(i, settled[0])
                    raise
                if on_reply:
                    on_reply(i, reply)
                bar.update(1)
                return reply
            # max_concurrency workers take the requests in order: a task per request would hold every coroutine
            # of a 100,000-request call in memory at once.
            replies: list[TeacherReply | None] = [None] * len(requests)
            queue = iter(enumerate(requests))

            async def worker() -> None:
                for i, r in queue:
                    replies[i] = await one(i, r)
            tasks = [asyncio.create_task(worker()) for _ in range(min(self.max_concurrency, len(requests)))]
            try:
                await asyncio.gather(*tasks)
            finally:  # when the breaker gives up: stop the rest and collect their outcome, so nothing is left unretrieved
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        replicas.raise_if_unanswered(unanswered, len(requests), self.max_retries + 1)
        return replies

    async def _with_retries(self, session, r: TeacherRequest, limiter: "RateLimiter", replicas: "Replicas",
                            on_attempt: Callable[[int], None], settled: list[TeacherReply], unanswered: list[str]) -> TeacherReply:
        """on_attempt(n) just before attempt n goes out; `settled` holds the last failed reply while no attempt is out."""
        failed: list[str] = []
        charged = 0  # attempts that count against max_retries: not those a replica's outage made fail
        body = json.dumps(self.options.body(self.model, r)).encode()
        last = None  # the replica the last attempt failed on: a retry goes elsewhere when another is up
        while True:
            await replicas.wait()
            await limiter.acquire(sum(len(m["content"]) for m in self.options.chat(r)) // 4 + r.max_tokens)
            replica = await replicas.pick(avoid=last)  # waits again if the limiter slept across an opening
            settled.clear()
            on_attempt(len(failed) + 1)
            replica.outstanding += 1
            try:
                reply, retry_after = await self._one(session, replica, r, body)
            finally:
                replica.outstanding -= 1
            reply.attempts, reply.attempt_errors = len(failed) + 1, tuple(failed)
            settled.append(reply)
            transport = retry_after is not None  # _one gives a wait exactly for the retryable, transport errors
            down = replica.breaker.record(not transport, reply.error)
            if not transport:
                return reply
            charged += not down
            if charged > self.max_retries:
                unanswered.append(reply.error)
                return reply
            failed.append(reply.error)
            last = replica
            if not down:  # while it is down its breaker paces every request
                delay = retry_after or self.backoff_s * 2 ** (charged - 1) * random.uniform(0.5, 1.5)  # server's word first
                await asyncio.sleep(min(self.max_backoff_s, delay))

    async def _one(self, session, replica: "Replica", r: TeacherRequest, body: bytes) -> tuple[TeacherReply, float | None]:
        """(reply, None if final, else seconds the server asked us to wait, 0 when it did not say)."""
        import aiohttp

        try:
            async with session.post(replica.url, data=body, proxy=replica.proxy) as resp:
                status, headers, data = resp.status, resp.headers, await resp.read()
        except (asyncio.TimeoutError, TimeoutError):
            return TeacherReply("", "error", error="timeout"), 0.0
        except aiohttp.ClientError:  # refused, reset, closed mid-reply, a broken payload
            return TeacherReply("", "error", error="connection"), 0.0
        if status >= 300:
            retryable = status in (408, 409, 429) or status >= 500
            return TeacherReply("", "error", error=f"http_{status}"), (retry_after(headers) if retryable else None)
        return completion_reply(data, r, self.options), None

    def close(self) -> None:
        if self._on_close:
            self._on_close()


class Replica:
    """One endpoint of the teacher: its chat URL, its health and the requests it has in flight."""

    def __init__(self, base_url: str, breaker: "Breaker"):
        self.url = (base_url or "https://api.openai.com/v1") + "/chat/completions"
        self.breaker, self.outstanding = breaker, 0
        self.proxy = proxy_for(self.url)


def proxy_for(url: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY name for url, as the openai client (httpx) honours them. Looked
    up once per replica: aiohttp's trust_env looks it up on every request, 0.5 ms of CPU each (LOG.md, issue 16)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


class Replicas:
    """The teacher's endpoints while generate() calls are active: each request goes to the open replica with the fewest
    requests outstanding. A replica that keeps failing is taken out by its breaker and brought back after the pause;
    the run stops (TeacherUnavailable) only when every replica has been down for outage_wait_s."""

    def __init__(self, base_urls: list[str], failures: int, wait_s: float, backoff_s: float, max_backoff_s: float):
        breakers = [Breaker(u or "the OpenAI API", failures, wait_s, backoff_s, max_backoff_s) for u in base_urls]
        for b in breakers:
            b.peers = breakers
        self.all = [Replica(u, b) for u, b in zip(base_urls, breakers)]
        self.where = ", ".join(b.where for b in breakers)

    async def wait(self) -> None:
        """Until some replica is open."""
        while (left := min(r.breaker.reopen_at for r in self.all) - time.monotonic()) > 0:
            await asyncio.sleep(left)

    async def pick(self, avoid: Replica | None = None) -> Replica:
        await self.wait()
        now = time.monotonic()
        open_ = [r for r in self.all if r.breaker.reopen_at <= now]
        return min((r for r in open_ if r is not avoid), key=lambda r: r.outstanding, default=open_[0])

    def raise_if_unanswered(self, unanswered: list[str], total: int, attempts: int) -> None:
        """After every request of a call finished: a request that failed every attempt (with these transport errors)
        while others got through is no row either."""
        if unanswered:
            counts = ", ".join(f"{reason} x{n}" for reason, n in collections.Counter(unanswered).most_common())
            raise TeacherUnavailable(
                f"{len(unanswered)} of {total} teacher requests failed after {attempts} attempt{'s' * (attempts != 1)} each "
                f"({counts}) at {self.where}; raise generation.teacher.timeout_s / max_retries or check the server, then "
                f"`daig resume` on the run folder")


class Breaker:
    """One endpoint's health across the requests of the generate() calls under way. After `failures` transport errors
    in a row the endpoint counts as down: no attempt starts for a pause (backoff_s, doubling up to max_backoff_s), then
    requests go again half-open, where one more transport error reopens at once. Any reply that came back, even a
    4xx, closes it. When every one of its peers (the replicas; itself alone by default) has been down for wait_s,
    TeacherUnavailable is raised: a down server is never turned into rows."""

    def __init__(self, where: str, failures: int, wait_s: float, backoff_s: float, max_backoff_s: float):
        self.where, self.failures, self.wait_s = where, failures, wait_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.in_a_row = 0
        self.pause = backoff_s  # the next opening's pause
        self.reopen_at = 0.0  # monotonic time the current pause ends
        self.down_since: float | None = None  # first opening since the last reply
        self.peers: list[Breaker] = [self]

    def record(self, ok: bool, reason: str = "") -> bool:
        """Count one attempt (ok: anything but a transport error); True while the endpoint is down, when the attempt
        is not its request's fault and costs it no retry."""
        now = time.monotonic()
        if ok:
            if self.down_since is not None:
                log.info("teacher endpoint %s answers again, after %.1f s", self.where, now - self.down_since)
            self.in_a_row, self.pause, self.reopen_at, self.down_since = 0, self.backoff_s, 0.0, None
            return False
        self.in_a_row += 1  # not reset on closing, so half-open needs only one more failure to reopen
        if now < self.reopen_at:
            return True  # an attempt that started before the pause
        if self.in_a_row < self.failures:
            return False
        if self.down_since is None:
            self.down_since = now
        pause = self.pause
        if all(p.down_since is not None for p in self.peers):  # no replica answers: the outage clock runs
            waited = now - max(p.down_since for p in self.peers)
            if waited >= self.wait_s:
                raise TeacherUnavailable(
                    f"teacher endpoint {', '.join(p.where for p in self.peers)} is down: {self.in_a_row} transport errors in "
                    f"a row (last: {reason}), no reply for {waited:.0f} s (generation.teacher.outage_wait_s={self.wait_s:g}); "
                    f"check the server, then `daig resume` on the run folder continues where this stopped")
            pause = min(pause, self.wait_s - waited)  # the last pause ends when the wait does, for one last probe
        log.warning("teacher endpoint %s is failing (%d transport errors in a row: %s); pausing %.3g s",
                    self.where, self.in_a_row, reason, pause)
        self.reopen_at = now + pause
        self.pause = min(2 * self.pause, self.max_backoff_s)
        return True


def retry_after(headers) -> float:
    """Seconds from Retry-After / retry-after-ms (0 when absent or unparseable)."""
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        pass
    return 0.0


class RateLimiter:
    """Requests- and tokens-per-minute caps over a sliding window (one minute; 0 = no cap)."""

    def __init__(self, rpm: int, tpm: int, window_s: float = 60.0):
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self.sent: list[tuple[float, int]] = []
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.sent = [(t, n) for t, n in self.sent if now - t < self.window_s]
                over_r = self.rpm and len(self.sent) >= self.rpm
                over_t = self.tpm and self.sent and sum(n for _, n in self.sent) + tokens > self.tpm
                if not over_r and not over_t:
                    self.sent.append((now, tokens))
                    return
                await asyncio.sleep(self.window_s - (now - self.sent[0][0]) + 0.01)
