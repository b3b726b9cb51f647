"""Pruning passes: structured channels/heads (``channels``), residual blocks (``layers``),
block sparsity (``blocks``), importance scores, schedules, and the replayable plan (``plan``)."""
