"""Every call autoraysearch makes to an LLM: OpenAI-compatible chat completions, Anthropic messages, a command.

Each client has one method, `complete(messages) -> Reply`, where messages alternate
{"role": "user" | "assistant", "content": text}, starting and ending with the user.

Transport rules, the same for both HTTP APIs: a timeout per request; 429 and 5xx are retried with
exponential backoff (Retry-After honoured, capped); 401/403, other 4xx, refused connections and
timeouts end at once with one sentence. API keys travel only in request headers: they are never
logged, never put into an exception (errors are raised outside `except` blocks so that no httpx
exception holding the request, and its headers, hangs off them as context), and any text from a
server or a command that reaches a message is scrubbed of them first.
"""

from __future__ import annotations

import email.utils
import logging
import os
import shlex
import queue
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Protocol

import httpx

from autoraysearch.trials import sandbox
from autoraysearch.errors import AutoraysearchError
from autoraysearch.ideators.llm.prompt import flatten_conversation
from autoraysearch.trials.process import kill_process_group

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
ANTHROPIC_VERSION = "2023-06-01"
MAX_DETAIL_CHARS = 200
# Never handed to a command ideator: it runs third-party code that has no business with them.


class LLMError(AutoraysearchError):
    """An LLM endpoint or command could not give an answer; the message is one sentence."""


class LLMAuthError(LLMError):
    """The endpoint refused the API key (401/403): retrying will not help."""


class LLMUnavailable(LLMError):
    """A transient failure that outlived its retries (429, 5xx, timeout, refused connection)."""


@dataclass(frozen=True)
class Reply:
    """One answer and what it cost."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: bool = False  # stopped at the token limit: its JSON is likely cut off


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a 429 or 5xx is retried."""

    attempts: int = 4
    base_delay_s: float = 1.0  # then 2x, 4x, ... unless the server sends Retry-After
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        wanted = retry_after if retry_after is not None else self.base_delay_s * 2 ** (attempt - 1)
        return max(0.0, min(wanted, self.max_delay_s))


class ChatClient(Protocol):
    def complete(self, messages: Messages) -> Reply: ...


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """The text with every secret replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Failure:
    """A request that got no HTTP response, described without the request it carried."""

    kind: str  # timeout, connect, transport
    detail: str


@dataclass
class JSONEndpoint:
    """POST JSON to one URL with retries; turns every failure into one sentence."""

    name: str  # "OpenAI-compatible", "Anthropic"
    base_url: str
    path: str
    headers: dict[str, str] = field(repr=False)
    key_hint: str  # where the key came from, for the 401 sentence: "OPENAI_API_KEY"
    timeout_s: float
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path

    @property
    def where(self) -> str:
        return f"the {self.name} endpoint at {self.base_url.rstrip('/')}"

    def post(self, body: dict) -> dict:
        """The JSON the endpoint answered with, after retrying 429 and 5xx."""
        secrets = [v.split()[-1] for k, v in self.headers.items() if k.lower() in ("authorization", "x-api-key") and v]
        for attempt in range(1, self.retry.attempts + 1):
            with httpx.Client(timeout=self.timeout_s) as client:  # a fresh one: a timed-out one is closed
                outcome = self._send(client, body)
                if isinstance(outcome, _Failure):
                    if outcome.kind == "transport" and attempt < self.retry.attempts:
                        self._wait(attempt, None, outcome.detail)
                        continue
                    raise LLMUnavailable(self._failure_sentence(outcome))
                status = outcome.status_code
                log.debug("%s answered %d (attempt %d)", self.url, status, attempt)
                if status in (401, 403):
                    raise LLMAuthError(f"{self.where} rejected the API key ({status}); check {self.key_hint}.")
                if status == 429 or status >= 500:
                    if attempt < self.retry.attempts:
                        self._wait(attempt, retry_after_seconds(outcome.headers.get("retry-after")), str(status))
                        continue
                    raise LLMUnavailable(
                        f"{self.where} answered {status} {self.retry.attempts} times in a row; try again later."
                    )
                if 300 <= status < 400:
                    # Not followed: a redirect elsewhere would carry the key to a host nobody named.
                    target = one_line(outcome.headers.get("location", "another address"), 120)
                    raise LLMError(f"{self.where} redirects to {target}; use that address as the base URL.")
                if status >= 400:
                    detail = redact(error_detail(outcome), secrets)
                    raise LLMError(
                        f"{self.where} refused the request ({status}: {detail}); check the model name and the base URL."
                    )
                payload = _json_or_none(outcome)
                if not isinstance(payload, dict):
                    raise LLMError(f"{self.where} answered with something that is not JSON; check the base URL.")
                return payload
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(self, client: httpx.Client, body: dict) -> httpx.Response | _Failure:
        """One request within timeout_s in all, however slowly the endpoint trickles its answer.

        httpx's timeouts count per read, so an answer that sends a byte every few seconds never hits
        them: the request runs in a thread of its own, and a request that outlives the total deadline
        is abandoned (its connection is closed under it) and counts as a timeout.
        """
        answer: queue.Queue = queue.Queue(maxsize=1)
        worker = threading.Thread(target=lambda: answer.put(self._post_once(client, body)), daemon=True,
                                  name="llm-request")
        worker.start()
        try:
            return answer.get(timeout=self.timeout_s)
        except queue.Empty:
            client.close()
            return _Failure("timeout", "")

    def _post_once(self, client: httpx.Client, body: dict) -> httpx.Response | _Failure:
        """One request; a failure without a response comes back as a value, so no exception escapes."""
        try:
            return client.post(self.url, json=body, headers=self.headers)
        except httpx.TimeoutException:
            return _Failure("timeout", "")
        except httpx.UnsupportedProtocol:
            return _Failure("connect", "the base URL must start with http:// or https://")
        except httpx.ConnectError as exc:
            text = str(exc)
            return _Failure("connect", "connection refused" if "refused" in text.lower() else one_line(text, 80))
        except httpx.TransportError as exc:
            # A dropped connection mid-answer: worth another try.
            return _Failure("transport", type(exc).__name__)
        except RuntimeError:  # the client was closed under a request that outlived its deadline
            return _Failure("timeout", "")

    def _failure_sentence(self, failure: _Failure) -> str:
        if failure.kind == "timeout":
            return f"{self.where} did not answer within {self.timeout_s:g} s; try again later or raise the timeout."
        if failure.kind == "connect":
            return f"cannot connect to {self.where} ({failure.detail}); check that it is running and the base URL is right."
        return f"{self.where} dropped the connection {self.retry.attempts} times ({failure.detail}); try again later."

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self.retry.delay(attempt, retry_after)
        log.info("%s answered %s; retrying in %.1f s (attempt %d of %d)", self.where, why, delay, attempt + 1, self.retry.attempts)
        self.sleep(delay)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_detail(response: httpx.Response) -> str:
    """The server's own error message (both APIs use {"error": {"message": ...}}), else its text."""
    payload = _json_or_none(response)
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return one_line(error["message"])
        if isinstance(error, str):
            return one_line(error)
    return one_line(response.text) or "no details"


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


class OpenAIChat:
    """POST {base_url}/chat/completions: OpenAI and every server that copies its API."""

    def __init__(self, endpoint_url: str, model: str, api_key: str | None, key_hint: str, timeout_s: float, retry: RetryPolicy):
        # Local servers (Ollama, vLLM) often need no key; then no Authorization header is sent.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.endpoint = JSONEndpoint("OpenAI-compatible", endpoint_url, "/chat/completions", headers, key_hint, timeout_s, retry)

    def __repr__(self) -> str:
        return f"OpenAIChat({self.endpoint.base_url!r}, model={self.model!r})"

    def complete(self, messages: Messages) -> Reply:
        payload = self.endpoint.post({"model": self.model, "messages": messages})
        try:
            choice = payload["choices"][0]
            content = choice["message"].get("content")
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            content = finish = None
            choice = None
        if choice is None:
            raise LLMError(f"{self.endpoint.where} answered without choices[0].message; check the base URL.")
        if isinstance(content, list):  # some servers send content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        usage = payload.get("usage") or {}
        return Reply(
            text=content if isinstance(content, str) else "",
            input_tokens=_int(usage.get("prompt_tokens")),
            output_tokens=_int(usage.get("completion_tokens")),
            truncated=finish == "length",
        )


class AnthropicChat:
    """POST {base_url}/v1/messages, Anthropic's Messages API."""

    def __init__(
        self, base_url: str, model: str, api_key: str, key_hint: str, timeout_s: float, retry: RetryPolicy, max_tokens: int
    ):
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        self.model = model
        self.max_tokens = max_tokens
        self.endpoint = JSONEndpoint("Anthropic", base_url, "/v1/messages", headers, key_hint, timeout_s, retry)

    def __repr__(self) -> str:
        return f"AnthropicChat({self.endpoint.base_url!r}, model={self.model!r})"

    def complete(self, messages: Messages) -> Reply:
        payload = self.endpoint.post({"model": self.model, "max_tokens": self.max_tokens, "messages": messages})
        blocks = payload.get("content")
        if not isinstance(blocks, list):
            raise LLMError(f"{self.endpoint.where} answered without a content list; check the base URL.")
        text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        usage = payload.get("usage") or {}
        return Reply(
            text=text,
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            truncated=payload.get("stop_reason") == "max_tokens",
        )


class CommandChat:
    """A command-line agent (e.g. `claude -p`): the whole conversation on stdin, the answer on stdout."""

    def __init__(self, command: str, timeout_s: float, hidden_env: Iterable[str] = (), secrets: Iterable[str] = ()):
        self.command = command
        self.argv = shlex.split(command)
        if not self.argv:
            raise LLMError("the ideator command is empty; give one such as 'claude -p'.")
        self.timeout_s = timeout_s
        self.hidden_env = frozenset(hidden_env)
        self._secrets = tuple(s for s in secrets if s)

    def __repr__(self) -> str:
        return f"CommandChat({self.argv[0]!r})"

    def complete(self, messages: Messages) -> Reply:
        prompt = flatten_conversation(messages).encode()
        env = {k: v for k, v in os.environ.items() if not sandbox.is_secret(k) and k not in self.hidden_env}
        shown = redact(self.command, self._secrets)
        # An empty scratch folder as cwd: an agent that edits files it finds cannot touch the experiment.
        with tempfile.TemporaryDirectory(prefix="autoraysearch-ideator-", ignore_cleanup_errors=True) as cwd:
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True,  # its own group: one kill reaches its children
                )
            except OSError as exc:
                problem = exc.strerror or type(exc).__name__
                proc = None
            if proc is None:
                raise LLMError(f"the ideator command `{shown}` cannot be started ({problem}); install it or fix the command.")
            stdout, stderr, timed_out = _communicate(proc, prompt, self.timeout_s)
        log.debug("ideator command %s finished in %.1f s with code %s", self.argv[0], time.monotonic() - started, proc.returncode)
        if timed_out:
            raise LLMUnavailable(f"the ideator command `{shown}` did not answer within {self.timeout_s:g} s; raise the timeout or check the command.")
        if proc.returncode != 0:
            lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
            last = redact(one_line(lines[-1]), self._secrets) if lines else "nothing on stderr"
            raise LLMError(f"the ideator command `{shown}` failed with exit code {proc.returncode} ({last}).")
        return Reply(text=stdout.decode(errors="replace"))


def _communicate(proc: subprocess.Popen, data: bytes, timeout_s: float) -> tuple[bytes, bytes, bool]:
    """Feed stdin, collect both outputs; on timeout or interruption kill the command's whole group."""
    try:
        stdout, stderr = proc.communicate(data, timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_process_group(proc.pid, grace=1.0)
        stdout, stderr = proc.communicate()
        timed_out = True
    except BaseException:
        kill_process_group(proc.pid, grace=1.0)
        proc.wait()
        raise
    kill_process_group(proc.pid, grace=1.0)  # after a normal exit: only strays it left running
    return stdout, stderr, timed_out


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
