"""Experiments beside the benchmarks: not measurements of the product, but of ideas for it."""
