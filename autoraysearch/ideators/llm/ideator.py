"""LLM ideators: prompt -> answer -> static checks -> repair turns with the reasons -> CPU pre-flight -> candidates.

The loop calls `propose_with_llm` once per iteration instead of the offline `mutate` ideator. A bad
answer never stops the campaign: it is sent back with the reason at most `max_repairs` times, and
whatever is still missing after that is reported in `Ideas.rejected` while the usable candidates go on.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from dataclasses import dataclass
from typing import Sequence

from autoraysearch.errors import AutoraysearchError
from autoraysearch.trials.sandbox import private_key
from autoraysearch.campaign.experiment import Candidate, Dropped, Ideas, Review
from autoraysearch.ideators.llm.answers import Accepted, review_answer
from autoraysearch.ideators.llm.clients import (
    AnthropicChat,
    ChatClient,
    CommandChat,
    LLMAuthError,
    LLMError,
    LLMUnavailable,
    Messages,
    OpenAIChat,
    Reply,
    RetryPolicy,
    redact,
)
from autoraysearch.ideators.llm.prompt import build_prompt, build_repair
from autoraysearch.trials.preflight import preflight_sources
from autoraysearch.campaign.settings import CampaignSettings

log = logging.getLogger(__name__)

KINDS = ("openai", "anthropic", "command")
DEFAULT_BASE_URL = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
EXAMPLE_MODEL = {"openai": "gpt-4.1", "anthropic": "claude-sonnet-4-5"}
TRUNCATED_REASON = (
    "the answer was cut off at the token limit; propose the change as short search/replace \"edits\" "
    "instead of the whole file"
)


@dataclass(frozen=True)
class LLMConfig:
    """Which LLM proposes the changes and how patiently it is asked."""

    kind: str  # "openai" | "anthropic" | "command"
    model: str = ""  # e.g. "gpt-4.1", "claude-sonnet-4-5"; ignored for command
    base_url: str | None = None  # OpenAI-compatible server (Ollama, vLLM...) or an Anthropic proxy
    command: str | None = None  # for kind="command", e.g. "claude -p" (shlex-split, no shell)
    api_key_env: str | None = None  # default OPENAI_API_KEY / ANTHROPIC_API_KEY
    timeout_s: float = 120.0
    max_repairs: int = 2  # how many times a rejected answer goes back to the LLM with the reason
    max_tokens: int = 8192  # Anthropic requires a cap on the answer's length
    retry_attempts: int = 4  # for 429 and 5xx
    retry_base_delay_s: float = 1.0
    preflight_timeout_s: float = 60.0
    param_cap: int = 200_000_000

    @property
    def key_env(self) -> str:
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.kind, "")

    @property
    def endpoint(self) -> str:
        return (self.base_url or DEFAULT_BASE_URL.get(self.kind, "")).rstrip("/")

    def validate(self) -> None:
        """Raise a one-sentence user error for the first setting that cannot work."""
        if self.kind not in KINDS:
            raise AutoraysearchError(f"LLM ideator kind {self.kind!r} is unknown; use openai, anthropic or command.")
        if self.kind == "command":
            if not (self.command or "").strip():
                raise AutoraysearchError("the command ideator needs a command that reads stdin, such as 'claude -p'.")
        elif not self.model.strip():
            raise AutoraysearchError(
                f"the {self.kind} ideator needs a model name, such as {EXAMPLE_MODEL[self.kind]}."
            )
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise AutoraysearchError(f"base URL {self.base_url!r} must start with http:// or https://.")
        if not self.timeout_s > 0 or not self.preflight_timeout_s > 0:
            raise AutoraysearchError("LLM and pre-flight timeouts must be positive numbers of seconds.")
        if self.max_repairs < 0 or self.retry_attempts < 1 or self.max_tokens < 1:
            raise AutoraysearchError("max_repairs must be 0 or more, retry_attempts and max_tokens 1 or more.")


def config_from_settings(settings: CampaignSettings) -> LLMConfig:
    """The LLM ideator a campaign's settings ask for."""
    return LLMConfig(
        kind=settings.ideator, model=settings.llm_model, base_url=settings.llm_base_url,
        command=settings.llm_command, timeout_s=settings.llm_timeout,
    )


def refuse_missing_command(config: LLMConfig) -> None:
    """A command ideator whose program is not installed is refused before the campaign starts."""
    config.validate()
    try:
        program = shlex.split(config.command or "")[0]
    except ValueError as exc:  # unbalanced quotes
        raise AutoraysearchError(f"the ideator command {config.command!r} cannot be read ({exc}); fix its quoting.") from None
    if shutil.which(program) is None:
        raise AutoraysearchError(
            f"the ideator command's program {program!r} is not installed or not on PATH; install it or fix --command."
        )


def campaign_api_key(config: LLMConfig, block_name: str | None = None) -> str | None:
    """The key a campaign will use, checked once before the first iteration; one sentence if it is missing."""
    config.validate()
    if block_name:
        return _load_secret_block(block_name)
    return _key_from_environment(config)


def resolve_api_key(config: LLMConfig, block_name: str | None = None) -> str | None:
    """The API key: from the Prefect Secret block when one is named, else from the environment."""
    if block_name:
        return _load_secret_block(block_name)
    if config.kind == "command":
        return None
    return private_key(config.key_env) or None


def _load_secret_block(block_name: str) -> str:
    from prefect.blocks.system import Secret  # lazily: importing prefect is slow and needs its settings

    try:
        value = Secret.load(block_name).get()
        problem = None
    except Exception as exc:  # not found, no API, wrong block type: all the same to the user
        value, problem = None, one_line_error(exc)
    if problem is not None:
        raise AutoraysearchError(
            f"the Prefect Secret block {block_name!r} cannot be loaded ({problem}); "
            f"create it in the Prefect UI or with `Secret(value=...).save({block_name!r})`."
        )
    if not isinstance(value, str) or not value:
        raise AutoraysearchError(f"the Prefect Secret block {block_name!r} does not hold a text API key; store the key as plain text.")
    return value


def one_line_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:150]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def propose_with_llm(
    review: Review, settings: CampaignSettings, labels: list[str], config: LLMConfig, api_key: str | None = None
) -> Ideas:
    """Ask the LLM for one untried change per label; return the ones that pass every check and pre-flight."""
    config.validate()
    given = api_key is not None
    key = api_key if given else _key_from_environment(config)
    hint = config.key_env if not given else f"the API key given ({config.key_env} or the Prefect Secret block)"
    client = make_client(config, key, hint)
    return ideate(client, review, settings, labels, config, secrets=[key] if key else [])


def _key_from_environment(config: LLMConfig) -> str | None:
    if config.kind == "command":
        return None
    key = private_key(config.key_env) or None
    # A self-hosted OpenAI-compatible server (Ollama, vLLM, LM Studio) usually needs no key at all.
    if key is None and not (config.kind == "openai" and config.base_url):
        raise AutoraysearchError(f"{config.key_env} is not set; export it or pass --api-key-block NAME.")
    return key


def make_client(config: LLMConfig, api_key: str | None, key_hint: str) -> ChatClient:
    """The client for config.kind; the key goes into its request headers and nowhere else."""
    retry = RetryPolicy(attempts=config.retry_attempts, base_delay_s=config.retry_base_delay_s)
    if config.kind == "openai":
        return OpenAIChat(config.endpoint, config.model, api_key, key_hint, config.timeout_s, retry)
    if config.kind == "anthropic":
        if not api_key:
            raise AutoraysearchError(f"{config.key_env} is not set; export it or pass --api-key-block NAME.")
        return AnthropicChat(config.endpoint, config.model, api_key, key_hint, config.timeout_s, retry, config.max_tokens)
    hidden = (config.api_key_env,) if config.api_key_env else ()
    return CommandChat(config.command or "", config.timeout_s, hidden_env=hidden, secrets=[api_key] if api_key else [])


def ideate(
    client: ChatClient,
    review: Review,
    settings: CampaignSettings,
    labels: list[str],
    config: LLMConfig,
    secrets: Sequence[str] = (),
) -> Ideas:
    """The conversation: ask, judge, send the reasons back until enough candidates passed or repairs ran out."""
    wanted = len(labels)
    usage = {"input_tokens": 0, "output_tokens": 0}
    if wanted == 0:
        return Ideas([], [], [], usage)
    messages: Messages = [{"role": "user", "content": build_prompt(review, settings, wanted)}]
    accepted: list[Accepted] = []
    rejected: list[tuple[str, str]] = []
    crashed: list[Dropped] = []
    seen: dict[str, str] = {}  # fingerprint -> what it was, across the whole conversation
    for turn in range(config.max_repairs + 1):
        reply = _ask(client, messages, repairing=turn > 0 and bool(accepted), rejected=rejected)
        if reply is None:
            break
        usage["input_tokens"] += reply.input_tokens
        usage["output_tokens"] += reply.output_tokens
        passed, dropped, failed = judge_reply(reply, review, settings, config, seen, wanted - len(accepted), secrets)
        accepted += passed
        rejected += dropped
        crashed += failed
        missing = wanted - len(accepted)
        if missing <= 0 or turn == config.max_repairs:
            break
        if not dropped:
            dropped = [("answer", f"it proposed too few candidates; {missing} more are needed")]
        log.info("asking the LLM again (repair %d of %d): %d candidate(s) missing", turn + 1, config.max_repairs, missing)
        messages += [
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": build_repair(dropped, [a.description for a in accepted], missing)},
        ]
    candidates = [
        Candidate(label=label, description=redact(a.description, secrets), model_source=a.source,
                  fingerprint=a.fingerprint, kind=a.kind or "llm")
        for label, a in zip(labels, accepted)
    ]
    log.info(
        "LLM ideator: %d of %d candidate(s), %d rejected, %d input + %d output tokens",
        len(candidates), wanted, len(rejected), usage["input_tokens"], usage["output_tokens"],
    )
    return Ideas(candidates, rejected, crashed, usage)


def _ask(client: ChatClient, messages: Messages, repairing: bool, rejected: list[tuple[str, str]]) -> Reply | None:
    """One call, or None (with the reason in `rejected`) when this iteration must go on without an answer.

    On a repair turn a transient failure keeps the candidates already in hand instead of losing them.
    A command ideator that fails (exits non-zero) costs one iteration, not the campaign: agents fail
    now and then overnight. A refused API key and an outage on the first turn still raise: the first
    cannot mend itself, the second is waited out and retried by the ideate step.
    """
    try:
        return client.complete(messages)
    except LLMUnavailable as exc:
        if not repairing:
            raise
        rejected.append(("answer", f"the repair turn failed: {exc}"))
        log.warning("the LLM's repair turn failed; going on with the candidates in hand: %s", exc)
        return None
    except LLMError as exc:
        if isinstance(exc, LLMAuthError) or not isinstance(client, CommandChat):
            raise
        rejected.append(("no answer", str(exc)))
        log.warning("%s", exc)
        return None


def judge_reply(
    reply: Reply,
    review: Review,
    settings: CampaignSettings,
    config: LLMConfig,
    seen: dict[str, str],
    missing: int,
    secrets: Sequence[str],
) -> tuple[list[Accepted], list[tuple[str, str]], list[Dropped]]:
    """Static checks on the answer, then pre-flight of up to `missing` survivors; updates `seen`.

    Returns the candidates that passed, every rejection with its reason, and the pre-flight failures.
    """
    answer = review_answer(reply.text, review.model_source, review.tried, seen)
    rejected = list(answer.rejected)
    if reply.truncated and not answer.accepted:
        rejected = [("answer", TRUNCATED_REASON)]
    taken = list(answer.accepted[:missing])
    if len(answer.accepted) > missing:
        log.debug("the LLM proposed %d usable candidates; %d were needed", len(answer.accepted), missing)
    passed: list[Accepted] = []
    failed: list[Dropped] = []
    hidden = (config.api_key_env,) if config.api_key_env else ()
    results = preflight_sources([p.source for p in taken], settings, config.param_cap, config.preflight_timeout_s, hidden)
    for proposal, result in zip(taken, results):
        if result.ok:
            log.info("pre-flight passed in %.1f s (%s parameters): %s", result.seconds, result.parameters, proposal.description)
            seen[proposal.fingerprint] = "a change you proposed earlier in this conversation"
            passed.append(proposal)
        else:
            log.info("pre-flight failed in %.1f s: %s", result.seconds, proposal.description)
            seen[proposal.fingerprint] = "a change that failed pre-flight earlier in this conversation"
            rejected.append((proposal.description, f"pre-flight: {result.describe()}"))
            failed.append(Dropped(redact(proposal.description, secrets), redact(f"pre-flight: {result.describe()}", secrets),
                                  "crash", proposal.fingerprint))
    rejected = [(redact(d, secrets), redact(r, secrets)) for d, r in rejected]
    for description, reason in rejected:
        log.info("rejected %s: %s", description, reason)
    return passed, rejected, failed
