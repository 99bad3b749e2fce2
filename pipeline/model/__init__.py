"""The budget-elastic late-interaction retriever: multi-vector outputs, budgets, pooling, MaxSim, VLM wrappers."""
