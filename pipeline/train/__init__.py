"""Training: the budget objective, gradient cache, distributed helpers, the DeepSpeed step and loop."""
