"""Data preparation: documents -> page images -> WebDataset shards (a Ray job). Imports no model or training code."""
