"""Foreign names (TRL's GRPOConfig keywords, ...) translated onto grpolab's config tree, at the edge."""
