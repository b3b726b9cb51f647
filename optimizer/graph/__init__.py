"""Capture and analysis of a model: the channel-dependency graph (``dependency``), a
head-prunable attention module (``attention``), parameter/MAC counts (``profile``) and the
record where passes note what they did (``record``)."""
