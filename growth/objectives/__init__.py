"""Training objectives beyond the token losses: contrastive losses and their exact accumulation."""
