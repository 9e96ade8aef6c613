"""GSM8K grade-school word problems, from a local file (data.path) or the hub.

The answer column holds a worked solution ending in "#### 72"; the gold answer is the text after
the last "####", stripped, with thousands separators removed ("#### 1,234" -> "1234"). The full
solution stays in Example.fields["solution"] for rewards or display that want it.

From the hub, train and val come from the "train" split and test from the "test" split, with any
question that appears in both kept only in test. A local file is one pool, cut like the generic
task (test, val, train), since a single exported file has no split of its own.
"""

from __future__ import annotations

from grpolab.config.schema import DataConfig
from grpolab.data import generic, hub
from grpolab.data.base import DataError, Example, Sizes, Splits
from grpolab.data.files import Row

DEFAULT_NAME, DEFAULT_CONFIG = "openai/gsm8k", "main"
MARKER = "####"
CATEGORY = "gsm8k"

LOCAL_HINT = (
    "Point data.path at a local copy instead (JSONL or Parquet with question/answer columns), "
    'e.g. made on a machine with network by: python -c "from datasets import load_dataset; '
    "load_dataset('openai/gsm8k', 'main', split='train').to_json('gsm8k.jsonl')\" "
    "then data.path=gsm8k.jsonl."
)


def gold_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: text after the last '####', without commas.

    >>> gold_answer("She sells 16 - 3 - 4 = 9 eggs.\\n#### 1,234")
    '1234'
    A bare answer without the marker ("72") is taken whole, as some exports store only the number.
    """
    tail = solution.rsplit(MARKER, 1)[-1] if MARKER in solution else solution
    return tail.strip().replace(",", "")


def row_maker(data: DataConfig, source: str) -> generic.MakeExample:
    def make(number: int, row: Row) -> Example:
        question = generic.required(row, data.question_column, number, source)
        solution = generic.required(row, data.answer_column, number, source)
        # A worked solution that lost its marker would otherwise become a paragraph-long "answer".
        if MARKER not in solution and len(solution.split()) > 1:
            raise DataError(f"{source}: row {number}: column '{data.answer_column}' has no '{MARKER} <answer>' line")
        answer = gold_answer(solution)
        if not answer:
            raise DataError(f"{source}: row {number}: nothing after '{MARKER}' in '{data.answer_column}'")
        return Example(question=question, answer=answer, category=CATEGORY, fields={"solution": solution})

    return make


def _hub_name(data: DataConfig) -> tuple[str, str]:
    return data.hf_name or DEFAULT_NAME, data.hf_config or DEFAULT_CONFIG


def _hub_examples(data: DataConfig, split: str) -> list[Example]:
    name, config = _hub_name(data)
    dataset = hub.load_split(name, config, split, LOCAL_HINT)
    return generic.to_examples(generic.as_rows(dataset), row_maker(data, f"dataset '{name}' split '{split}'"))


def build(data: DataConfig, seed: int, sizes: Sizes) -> Splits:
    local = generic.local_sources(data)
    if local is not None:
        examples = generic.sources_examples(local, lambda name: row_maker(data, name))
        return generic.split_examples(examples, seed, sizes, generic.source_name(data))
    name, _ = _hub_name(data)
    test_pool = generic.unique(_hub_examples(data, "test"))
    if sizes.test > len(test_pool):
        raise DataError(
            f"data.test_size ({sizes.test}) is too large: '{name}' split 'test' has only "
            f"{len(test_pool)} distinct questions; lower data.test_size to at most {len(test_pool)}"
        )
    test = generic.shuffled(test_pool, seed)[: sizes.test]
    # Exclude the whole test split, not just the drawn part: a test question is never trained on.
    train_pool = generic.unique(_hub_examples(data, "train"), exclude={e.question for e in test_pool})
    what = f"'{name}' split 'train' (minus test questions)"
    rest = generic.fit_train(len(train_pool), Sizes(train=sizes.train, val=sizes.val, test=0), what)
    order = generic.shuffled(train_pool, seed)
    return Splits(train=order[rest.val : rest.val + rest.train], val=order[: rest.val], test=test)


def validate(data: DataConfig, sizes: Sizes) -> None:
    local = generic.local_sources(data)
    if local is not None:
        pool = generic.unique(generic.sources_examples(local, lambda name: row_maker(data, name)))
        generic.fit_train(len(pool), sizes, generic.source_name(data))
    else:
        hub.check_hub(_hub_name(data)[0], LOCAL_HINT)
