"""recscope.core: the one copy of mathematics several packages share.

A base layer: it imports only numpy, scipy and :mod:`recscope.errors`.

- :mod:`recscope.core.multiple_testing`: p-value adjustment (Holm, Benjamini-Hochberg,
  Bonferroni) used by offline comparisons and experiment scorecards;
- :mod:`recscope.core.splitmix`: SplitMix64 / common-random-number hashing;
- :mod:`recscope.core.plackett_luce`: Plackett-Luce position probabilities.
"""
