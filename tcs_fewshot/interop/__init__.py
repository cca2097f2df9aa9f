"""Adapters from other few-shot toolkits (learn2learn, easyfsl) into the evaluator."""
