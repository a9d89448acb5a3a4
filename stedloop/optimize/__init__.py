"""Bayesian optimisation of the imaging parameters (ask/tell over the capped parameter box)."""

from stedloop.optimize.bayes import BayesianOptimizer, Proposal, resolve_score_transform
from stedloop.optimize.space import SearchSpace

__all__ = ["BayesianOptimizer", "Proposal", "SearchSpace", "resolve_score_transform"]
