"""Tests of pipeline.model: vectors, budgets, pooling, MaxSim, tiny checkpoints, the retriever and its options."""
