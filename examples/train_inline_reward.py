"""Notebook-style: GRPO on a `datasets.Dataset` of chat prompts with a reward written right here.

Runs on a laptop CPU with the embedded tiny model (no download, no GPU):

    python examples/train_inline_reward.py              # 40 steps, about a minute
    STEPS=1 EVAL_ROWS=8 python examples/train_inline_reward.py   # a smoke run (what the test does)

Everything below works the same in a Jupyter cell: the reward is an ordinary function, no import
path or registration needed.
"""

import os
import re

from datasets import Dataset

from grpolab import GRPOConfig, GRPOTrainer

# Conversational prompts (TRL's format): a list of chat messages per row. The other columns reach
# the reward functions under their own names ("operands" below; "answer" also feeds grpolab's
# built-in correctness reward, which evaluation uses for its accuracy).
rows = [
    {
        "prompt": [
            {"role": "system", "content": "Put the final answer in <answer></answer>."},
            {"role": "user", "content": f"What is {a} + {b}?"},
        ],
        "operands": [a, b],
        "answer": str(a + b),
    }
    for a in range(20)
    for b in range(20)
]
splits = Dataset.from_list(rows).train_test_split(test_size=int(os.environ.get("EVAL_ROWS", 32)), seed=0)


def sums_correctly(completions, operands, **kwargs):
    """1.0 when the <answer> holds the sum of the row's operands. With conversational prompts each
    completion is a list of messages, as in TRL; the answer is the last message's content."""
    rewards = []
    for messages, (a, b) in zip(completions, operands):
        found = re.search(r"<answer>\s*(-?\d+)\s*</answer>", messages[-1]["content"])
        rewards.append(1.0 if found and int(found.group(1)) == a + b else 0.0)
    return rewards


args = GRPOConfig.load(
    "default",  # the embedded tiny model and the arithmetic defaults; any field can be overridden
    f"train.max_steps={int(os.environ.get('STEPS', 40))}",
    "train.questions_per_step=4",
    "grpo.num_generations=8",
    "eval.every_steps=20",
    "eval.size=32",
    "generation.max_new_tokens=24",
    "optim.lr=1e-4",
    "train.run_name=inline_reward",
    "logging.report=false",
    "train.torch_threads=1",  # the tiny model gains nothing from more threads
)
trainer = GRPOTrainer(
    model="tiny",
    reward_funcs=[sums_correctly, "answer_format"],  # a callable and a built-in, weighted
    reward_weights=[1.0, 0.2],
    train_dataset=splits["train"],
    eval_dataset=splits["test"],
    args=args,
)
summary = trainer.train()
print(f"{summary.status} after {summary.steps} steps; best validation accuracy {summary.best_accuracy}")
metrics = trainer.evaluate()
print({k: round(v, 3) for k, v in metrics.items() if k in ("eval/accuracy", "eval/format", "eval/mean_reward")})
trainer.save_model(summary.run_dir / "inline-model")
print(f"model saved to {summary.run_dir / 'inline-model'}")
