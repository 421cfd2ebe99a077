"""Plumbing: paths, devices, data loading, configs, checkpoints and torchrun set-up.

What the workflows need to touch the outside world; imports ``core`` and ``errors`` only.
"""
