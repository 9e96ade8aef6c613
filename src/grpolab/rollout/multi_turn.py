"""Multi-turn agent rollouts, token-in token-out: the ids trained on are the ids the model saw.

One trajectory, as the trainer receives it (`Rollout`):

    prompt_ids | S1 | D1 | S2 | D2 | ... | Sk          (k <= max_turns)

    S_t  ids the model sampled at turn t, kept exactly as returned by the generator, ending with
         its stop token unless the turn was truncated;                       mask 1 (both modes)
    D_t  the observation delta: the template's glue after S_t's stop token, the tool messages,
         and the next generation prompt, rendered as text and tokenised ON ITS OWN; the history
         before it is never re-tokenised;                       mask 0 (masked) | 1 (full)

A worked example with a ChatML template (Qwen2.5 style, tool results wrapped in a user turn):

    prompt  "<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\nWhat is 12*34?<|im_end|>\\n"
            "<|im_start|>assistant\\n"
    S1      '<tool_call>{"name": "calculator", "arguments": {"expression": "12*34"}}</tool_call><|im_end|>'
    D1      "\\n<|im_start|>user\\n<tool_response>\\n408\\n</tool_response><|im_end|>\\n"
            "<|im_start|>assistant\\n"
    S2      "12*34 = 408<|im_end|>"

The "\\n" that opens D1 is template glue after the sampled <|im_end|>: the model never sampled it,
so it is not trained in masked mode. The loss mask is built in `_Episode.add_sampled` and
`_Episode.add_observation` below: mask=0 for the tool tokens and that glue; the prompt is outside
`completion_ids` altogether, so it is never trained either (collate gives it no mask column).

Batching: the B*G trajectories of a call are generated together, ONE `generator.generate` call
per turn over every trajectory still running; a trajectory that finishes leaves the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grpolab.envs.env import EnvFactory, Environment, Message
from grpolab.rollout.backend import Generator, SamplingParams
from grpolab.rollout.types import Rollout

# Stands in for the sampled turn when the template renders the conversation, so the sampled text
# is located by a plain search (the real content could occur elsewhere, e.g. echoed by a tool).
_PLACEHOLDER = "GRPOLAB_SAMPLED_TURN_5b1e"

# Why an episode ended (Rollout.info["stop_reason"]). truncated=True for every reason but "done":
# the episode was cut before the model finished on its own.
STOP_REASONS = ("done", "max_tokens", "max_total_tokens", "max_turns")


def _as_ids(encoded: Any) -> list[int]:
    # apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5 and a list before.
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    return [int(token) for token in ids]


def _render(tokenizer: Any, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
    return str(tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True, tokenize=False))


def observation_delta(
    tokenizer: Any,
    history: list[Message],
    observations: list[Message],
    tools: list[dict[str, Any]] | None,
    stop_text: str,
) -> str:
    """The text that follows a sampled turn ending in `stop_text`: glue, observations, generation prompt.

    history: the messages the sampled turn answered (everything before it).
    The template renders history + [assistant(placeholder)] + observations + generation prompt;
    the delta is what follows the placeholder's end-of-turn. When the template ends an assistant
    turn with the very token the model stopped on (ChatML's <|im_end|>), that token is already in the
    sampled ids and is skipped; otherwise (the model stopped on a different eos) the template's own
    end-of-turn is inserted as glue. Because the delta starts right after a (special) stop token,
    tokenising it alone gives the same ids as the template's full rendering would have there.
    """
    placeholder = {"role": "assistant", "content": _PLACEHOLDER}
    rendered = _render(tokenizer, [*history, placeholder, *observations], tools)
    start = rendered.rfind(_PLACEHOLDER)
    if start < 0:
        raise ValueError(
            "the chat template did not render the assistant message's content, so the sampled turn "
            "cannot be located; use a template that renders assistant 'content' (ChatML, Qwen, Hermes)"
        )
    after = rendered[start + len(_PLACEHOLDER) :]
    stripped = after.lstrip()  # templates that put whitespace between content and end-of-turn
    if stop_text and stripped.startswith(stop_text):
        return stripped[len(stop_text) :]
    return after


@dataclass
class _Episode:
    """One trajectory in progress; `ids`, `mask`, `logprobs` are parallel and cover completion_ids."""

    question_index: int
    env: Environment
    messages: list[Message]
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampled_spans: list[list[int]] = field(default_factory=list)  # [start, end) in completion_ids
    step_infos: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0
    text: str = ""
    done: bool = False
    truncated: bool = False
    stop_reason: str = ""
    env_reward: float | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.ids)

    def add_sampled(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        """THE MASK IS BUILT HERE AND IN add_observation: ids the model sampled get mask 1 (both modes)."""
        self.sampled_spans.append([len(self.ids), len(self.ids) + len(ids)])
        self.ids.extend(ids)
        self.mask.extend([1] * len(ids))
        self.logprobs.extend(logprobs)

    def add_observation(self, ids: Sequence[int], *, trained: bool) -> None:
        """Tool/observation tokens and template glue: mask=0 in masked mode (trained=False), 1 in full
        mode. The prompt never passes through here or add_sampled: it is not in completion_ids."""
        self.ids.extend(ids)
        self.mask.extend([int(trained)] * len(ids))
        self.logprobs.extend([0.0] * len(ids))  # no sampler log-prob exists: 0 is a filler

    def finish(self, *, truncated: bool, reason: str) -> None:
        self.done, self.truncated, self.stop_reason = True, truncated, reason
        final_reward = getattr(self.env, "final_reward", None)
        self.env_reward = final_reward() if callable(final_reward) else None


def run_agent_rollouts(
    generator: Generator,
    tokenizer: Any,
    env_factory: EnvFactory,
    rows: list[dict[str, Any]],
    params: SamplingParams,
    max_turns: int,
    max_total_tokens: int,
    mode: Literal["masked", "full"] = "masked",
) -> list[Rollout]:
    """G = params.num_samples trajectories per row; returns B*G rollouts, question-major (row i's
    trajectories are [i*G, (i+1)*G)), each with question_index = i.

    params.max_new_tokens caps each turn; `max_total_tokens` caps len(prompt_ids) + len(completion_ids).
    Each turn asks the generator for one sample per live episode (a trajectory is its own row).
    """
    if mode not in ("masked", "full"):
        raise ValueError(f"mode must be 'masked' or 'full', got {mode!r}")
    if max_turns < 1 or max_total_tokens < 1 or params.num_samples < 1:
        raise ValueError("max_turns, max_total_tokens and params.num_samples must be >= 1")
    episodes = [
        _start(env_factory(), tokenizer, row, index)
        for index, row in enumerate(rows)
        for _ in range(params.num_samples)
    ]
    for episode in episodes:
        if episode.length >= max_total_tokens:  # no room for even one sampled token
            episode.finish(truncated=True, reason="max_total_tokens")
    while active := [episode for episode in episodes if not episode.done]:
        budgets = [max_total_tokens - episode.length for episode in active]
        turn_params = dataclasses.replace(
            params, num_samples=1, max_new_tokens=min(params.max_new_tokens, max(budgets))
        )
        output = generator.generate([episode.prompt_ids + episode.ids for episode in active], turn_params)
        if len(output.completions) != len(active):
            raise ValueError(f"generator returned {len(output.completions)} completions for {len(active)} prompts")
        for k, episode in enumerate(active):
            _advance(
                episode,
                tokenizer,
                output.completions[k],
                output.logprobs[k],
                output.truncated[k],
                budgets[k],
                max_turns,
                max_total_tokens,
                trained_observations=mode == "full",
            )
    return [_to_rollout(episode) for episode in episodes]


def _start(env: Environment, tokenizer: Any, row: dict[str, Any], index: int) -> _Episode:
    bind = getattr(env, "bind_tokenizer", None)  # optional: lets the env parse with the model's own parser
    if callable(bind):
        bind(tokenizer)
    messages = env.reset(row)
    tools = getattr(env, "tools", None) or None  # duck-typed environments may have no tools at all
    prompt_ids = _as_ids(
        tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
    )
    return _Episode(question_index=index, env=env, messages=list(messages), prompt_ids=prompt_ids)


def _advance(
    episode: _Episode,
    tokenizer: Any,
    ids: list[int],
    logprobs: list[float],
    truncated: bool,
    budget: int,
    max_turns: int,
    max_total_tokens: int,
    trained_observations: bool,
) -> None:
    """One turn of one trajectory: keep the sampled ids, let the env react, append the observation."""
    if len(logprobs) != len(ids):
        raise ValueError(f"generator returned {len(logprobs)} log-probs for {len(ids)} sampled tokens")
    if len(ids) > budget:  # the batch's max_new_tokens fits the roomiest trajectory, not this one
        ids, logprobs, truncated = ids[:budget], logprobs[:budget], True
    truncated = truncated or not ids
    reason = "max_total_tokens" if len(ids) >= budget else "max_tokens"
    episode.add_sampled(ids, logprobs)
    # Decoded only for the env, rewards and display; training keeps `ids`. Untruncated turns end
    # with the stop token, which is not part of the message content.
    content = ids if truncated else ids[:-1]
    episode.text = tokenizer.decode(content, skip_special_tokens=False)
    history = list(episode.messages)
    episode.messages.append({"role": "assistant", "content": episode.text})
    episode.turns += 1
    if truncated:
        episode.finish(truncated=True, reason=reason)
        return
    result = episode.env.step(episode.text)
    episode.step_infos.append(result.info)
    if result.done:
        episode.finish(truncated=False, reason="done")
        return
    if episode.turns >= max_turns:
        episode.finish(truncated=True, reason="max_turns")
        return
    stop_text = tokenizer.decode(ids[-1:], skip_special_tokens=False)
    delta_text = observation_delta(
        tokenizer, history, result.observations, getattr(episode.env, "tools", None) or None, stop_text
    )
    delta = [int(t) for t in tokenizer.encode(delta_text, add_special_tokens=False)]
    if episode.length + len(delta) >= max_total_tokens:
        # No room left to sample an answer after the observation: end here, without a dangling
        # observation that nothing was sampled after (messages stay in step with the tokens).
        episode.finish(truncated=True, reason="max_total_tokens")
        return
    episode.add_observation(delta, trained=trained_observations)
    episode.messages.extend(result.observations)


def _to_rollout(episode: _Episode) -> Rollout:
    per_tool: dict[str, dict[str, int]] = {}
    for step in episode.step_infos:
        for name, counts in step.get("per_tool", {}).items():
            entry = per_tool.setdefault(name, {"calls": 0, "failures": 0})
            entry["calls"] += int(counts.get("calls", 0))
            entry["failures"] += int(counts.get("failures", 0))
    info: dict[str, Any] = {
        "turns": episode.turns,
        "tool_calls": sum(int(i.get("tool_calls", 0)) for i in episode.step_infos),
        "tool_failures": sum(int(i.get("tool_failures", 0)) for i in episode.step_infos),
        "per_tool": per_tool,
        "env_reward": episode.env_reward,
        "stop_reason": episode.stop_reason,
        "sampled_spans": episode.sampled_spans,
        "steps": episode.step_infos,  # the env's per-turn info, for user reward functions
        "environment": episode.env,  # the rewards' `environments` input (TRL's), read after the episode
    }
    return Rollout(
        question_index=episode.question_index,
        prompt_ids=episode.prompt_ids,
        completion_ids=episode.ids,
        completion_mask=episode.mask,
        text=episode.text,
        truncated=episode.truncated,
        sample_logprobs=episode.logprobs,
        messages=episode.messages,
        info=info,
    )


def trained_spans(rollout: Rollout, tokenizer: Any) -> list[dict[str, Any]]:
    """The whole trajectory as consecutive text spans marked trained or not (for samples.jsonl).

    The prompt is one untrained span; the completion is split wherever the mask changes, so in
    masked mode the model's turns read trained and the tool output and glue between them do not.
    Joining the texts gives the decoded trajectory.
    """
    spans = [{"text": tokenizer.decode(rollout.prompt_ids, skip_special_tokens=False), "trained": False}]
    start = 0
    ids, mask = rollout.completion_ids, rollout.completion_mask
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            spans.append(
                {
                    "text": tokenizer.decode(ids[start:end], skip_special_tokens=False),
                    "trained": bool(mask[start]),
                }
            )
            start = end
    return spans
