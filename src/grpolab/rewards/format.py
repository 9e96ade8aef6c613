"""Format rewards: does the completion use the tags the system prompt asked for?

Three families, each matching the recipe users port from (see docs/rewards.md):
- open-r1: `format` (strict think/answer layout), `tag_count` (partial credit per tag).
- Tunix GRPO demo: `match_format_exactly`, `match_format_approximately` (<reasoning>/<answer>).
- lenient partial credit: `hard_format`, `mark` (tag names configurable, newlines optional).
Plus ours: `answer_format`, the format reward of the default arithmetic preset, whose tiny model
answers `<answer>42</answer>` with no think section.
"""

from __future__ import annotations

import re

# open-r1: anchored at the start; DOTALL lets the sections span lines; MULTILINE makes `$` match at
# any line end, so trailing text on a later line is tolerated, as in the original.
R1_FORMAT_RE = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL | re.MULTILINE)

# Tunix demo: searched anywhere (MULTILINE lets `^`/`$` sit at any line boundary); the reasoning needs
# at least one character; group 1 is the answer that `check_answer` grades.
TUNIX_FORMAT_RE = re.compile(
    r"^[\s]*<reasoning>.+?</reasoning>.*?<answer>(.+?)</answer>[\s]*$", re.DOTALL | re.MULTILINE
)


def format_reward(completions: list[str]) -> list[float]:
    """open-r1 strict layout `<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>`: 1.0 / 0.0."""
    return [1.0 if R1_FORMAT_RE.match(text) else 0.0 for text in completions]


def answer_format(completions: list[str]) -> list[float]:
    """Exactly one `<answer>…</answer>` with a non-blank body: 1.0 / 0.0 (default arithmetic preset)."""
    out = []
    for text in completions:
        ok = text.count("<answer>") == 1 and text.count("</answer>") == 1
        if ok:
            start, end = text.index("<answer>") + len("<answer>"), text.index("</answer>")
            ok = start <= end and text[start:end].strip() != ""
        out.append(1.0 if ok else 0.0)
    return out


def tag_count(completions: list[str]) -> list[float]:
    """open-r1: +0.25 for each of `<think>\\n`, `\\n</think>\\n`, `\\n<answer>\\n`, `\\n</answer>`
    occurring exactly once. Range 0–1."""
    pieces = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")
    return [0.25 * sum(text.count(p) == 1 for p in pieces) for text in completions]


def match_format_exactly(completions: list[str]) -> list[float]:
    """Tunix: `<reasoning>…</reasoning>` then `<answer>…</answer>`, only whitespace around: 3.0 / 0."""
    return [3.0 if TUNIX_FORMAT_RE.search(text) else 0.0 for text in completions]


def match_format_approximately(completions: list[str]) -> list[float]:
    """Tunix: per tag of <reasoning>, </reasoning>, <answer>, </answer>: +0.5 if exactly once, else
    −0.5. Range −2…2."""
    tags = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
    return [sum(0.5 if text.count(t) == 1 else -0.5 for t in tags) for text in completions]


def hard_format(completions: list[str], think_tag: str = "think", answer_tag: str = "answer") -> list[float]:
    """Lenient partial credit: think and answer tag pairs present 0.5; answer pair only 0.25; else 0."""
    out = []
    for text in completions:
        has_think = f"<{think_tag}>" in text and f"</{think_tag}>" in text
        has_answer = f"<{answer_tag}>" in text and f"</{answer_tag}>" in text
        out.append(0.5 if has_think and has_answer else 0.25 if has_answer else 0.0)
    return out


def mark(completions: list[str], think_tag: str = "think", answer_tag: str = "answer") -> list[float]:
    """Lenient tag count: +0.125 for each of the four tags present, newlines optional. Range 0–0.5."""
    tags = (f"<{think_tag}>", f"</{think_tag}>", f"<{answer_tag}>", f"</{answer_tag}>")
    return [0.125 * sum(t in text for t in tags) for text in completions]


def tunix_answer(text: str) -> str | None:
    """The answer group of the Tunix format regex, or None when the layout does not match."""
    match = TUNIX_FORMAT_RE.search(text)
    return match.group(1) if match else None


def is_valid_tag(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][\w.-]*", name) is not None
