"""The migration benchmark: the seed procedure, the runbook and the copy floor, side by side."""
