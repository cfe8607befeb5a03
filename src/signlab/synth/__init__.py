"""Synthetic traffic signs drawn from code: vector pictograms of the 43 GTSRB classes, and renderers built on them."""
