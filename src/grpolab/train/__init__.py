"""One training run: the loop, the policy update, optimizer and schedule, run state, checkpoints, export."""
