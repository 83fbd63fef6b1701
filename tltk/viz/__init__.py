"""Visualisation: plots (loss, metric and PR curves) and inference overlays, rendered with matplotlib's Agg backend."""
