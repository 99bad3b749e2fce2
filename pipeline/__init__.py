"""Budget-elastic visual document retrieval: one ColPali-style retriever trained for many (layers, dim, pool) budgets."""
