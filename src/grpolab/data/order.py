"""Which questions each step trains on: a fresh seeded permutation per epoch, B at a time.

The state is two integers (epoch, position), so a resumed run draws exactly the batches the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import random


class QuestionOrder:
    def __init__(self, num_questions: int, batch_size: int, seed: int) -> None:
        if batch_size > num_questions:
            raise ValueError(
                f"train.questions_per_step ({batch_size}) is larger than the training set ({num_questions})"
            )
        self.num_questions = num_questions
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_questions))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self) -> tuple[list[int], bool]:
        """The next B question indices, and whether this batch is the last of its epoch.

        A tail shorter than B is skipped rather than mixed with the next epoch, so epoch
        statistics cover whole epochs.
        """
        batch = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        epoch_ends = self.position + self.batch_size > self.num_questions
        if epoch_ends:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        return batch, epoch_ends

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
