"""Presentation: figures, result tables and computed conclusions, the guidance slider.

Draws what the workflows produced; imports every layer but the command line.
"""
