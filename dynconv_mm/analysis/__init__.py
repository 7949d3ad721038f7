"""Complexity analysis: parameters and multiply-adds of models that contain
dynamic convolutions, counted as their inference cost at batch 1."""
