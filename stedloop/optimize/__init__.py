"""Bayesian optimisation of the imaging parameters (ask/tell over the capped parameter box)."""

from stedloop.optimize.bayes import BayesianOptimizer, Proposal
from stedloop.optimize.space import SearchSpace

__all__ = ["BayesianOptimizer", "Proposal", "SearchSpace"]
