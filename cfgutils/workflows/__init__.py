"""Workflows: training (the diffusion model and the classifier), the experiments, the metrics, the notebook runner.

Combines ``core`` and ``plumbing`` into the runs the notebooks and the command line start.
"""
