"""Correctness rewards: is the completion's final answer the gold answer?

- `numeric` (ours; default for arithmetic and GSM8K): exact number comparison, see `extract.py`.
- `accuracy` (open-r1): symbolic comparison with math-verify.
- `check_answer`, `check_numbers` (Tunix GRPO demo): graded string/ratio match, first number.

math-verify guards its own parse/verify with `signal.alarm`, which only works in the main thread;
the trainer may score from a worker thread (async rollouts, judge pools). So its timeouts are
switched off and each sample runs in a daemon thread with our own deadline: a parse that hangs
yields None (cannot score) instead of hanging training. Python cannot kill that thread; it is
left to finish in the background, which is the lesser evil.
"""

from __future__ import annotations

import threading
from typing import Any

from grpolab.rewards.extract import final_answer, first_number, gold_number, gold_text, to_number
from grpolab.rewards.format import tunix_answer

MATH_TIMEOUT_S = 5.0


def numeric(completions: list[str], answer: list[Any]) -> list[float | None]:
    """Final number (<answer>, else `#### N`, else last number) equals the gold number: 1.0 / 0.0;
    unparsable gold -> None."""
    out: list[float | None] = []
    for text, gold in zip(completions, answer):
        target = gold_number(gold)
        if target is None:
            out.append(None)
            continue
        guess = final_answer(text)
        out.append(1.0 if guess is not None and guess == target else 0.0)
    return out


def _math_verify_correct(completion: str, gold: str) -> bool | None:
    """True/False by math-verify, None when the gold cannot be parsed. No timeout of its own."""
    import math_verify.grader
    import math_verify.parser
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    # We do provide the timeout it asks for (see module docstring); silence its one-time warning.
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # type: ignore[attr-defined]
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # type: ignore[attr-defined]

    # Gold: lenient (plain numbers and LaTeX, the library defaults), first match.
    gold_parsed = parse(gold, extraction_mode="first_match", parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_parsed:
        return None
    # Completion: LaTeX only, \boxed{} first (priority 0); nits/malformed operators off as in open-r1.
    # (open-r1 also sets equations=True, which math-verify 0.9 deprecates: its parser handles `x = 3`.)
    answer_config = LatexExtractionConfig(
        normalization_config=NormalizationConfig(
            nits=False, malformed_operators=False, basic_latex=True, boxed="all", units=True
        ),
        boxed_match_priority=0,
        try_extract_without_anchor=False,
    )
    answer_parsed = parse(
        completion,
        extraction_config=[answer_config],
        extraction_mode="first_match",
        parsing_timeout=None,  # type: ignore[arg-type]
    )
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def run_with_deadline(fn: Any, *args: Any, timeout_s: float) -> tuple[bool, Any]:
    """(finished, result) of `fn(*args)` run in a daemon thread; exceptions propagate."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=target, name="grpolab-math-verify", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box.get("value")


def math_correct(completion: str, gold: Any, timeout_s: float = MATH_TIMEOUT_S) -> bool | None:
    """math-verify correctness with a deadline: None for no gold, unparsable gold, or timeout."""
    if gold is None:
        return None
    # Import sympy & co. here, outside the deadline: the first import alone can take a second or more.
    import latex2sympy2_extended  # noqa: F401
    import math_verify  # noqa: F401

    # A GSM8K gold is a worked solution; its answer is what follows the last `####`.
    finished, value = run_with_deadline(_math_verify_correct, completion, gold_text(str(gold)), timeout_s=timeout_s)
    return value if finished else None


def accuracy(completions: list[str], answer: list[Any], timeout_s: float = MATH_TIMEOUT_S) -> list[float | None]:
    """open-r1 math accuracy with math-verify (\\boxed{} preferred, last one counts): 1.0 / 0.0;
    unparsable gold or timeout -> None."""
    out: list[float | None] = []
    for text, gold in zip(completions, answer):
        correct = math_correct(text, gold, timeout_s)
        out.append(None if correct is None else float(correct))
    return out


def check_answer(completions: list[str], answer: list[Any]) -> list[float]:
    """Tunix: answer in the <reasoning>/<answer> layout: exact 3.0; equal after strip 1.5; else
    guess/gold in [0.9, 1.1] 0.5, in [0.8, 1.2] 0.25, else −1.0; unparsable/zero gold −0.5; no layout 0."""
    out = []
    for text, gold in zip(completions, answer):
        guess = tunix_answer(text)
        if guess is None:
            out.append(0.0)
            continue
        true = gold_text(str(gold)) if gold is not None else ""
        if guess == true:
            out.append(3.0)
        elif guess.strip() == true.strip():
            out.append(1.5)
        else:
            out.append(_ratio_score(guess, true))
    return out


def _ratio_score(guess: str, true: str) -> float:
    # The demo's float() parse: a guess or gold that float() rejects (or a zero gold) scores −0.5.
    try:
        ratio = float(guess) / float(true)
    except (ValueError, ZeroDivisionError):
        return -0.5
    if 0.9 <= ratio <= 1.1:
        return 0.5
    if 0.8 <= ratio <= 1.2:
        return 0.25
    return -1.0


def check_numbers(completions: list[str], answer: list[Any]) -> list[float]:
    """Tunix: first number after `<answer>` equals the gold number: 1.5 / 0. Unlike the demo, keeps
    minus signs and thousands commas (`-5`, `1,000`)."""
    out = []
    for text, gold in zip(completions, answer):
        start = text.find("<answer>")
        guess = first_number(text[start + len("<answer>") :]) if start >= 0 else None
        target = to_number(gold_text(str(gold))) if gold is not None else None
        out.append(1.5 if guess is not None and target is not None and guess == target else 0.0)
    return out
