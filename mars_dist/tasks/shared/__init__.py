"""Helpers the task modules share (not tasks themselves)."""
