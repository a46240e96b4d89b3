"""Canonical interaction data: schema, validation, vocabularies, readers, loaders, splits."""

from recscope.data.interactions import Interactions, UserSequences
from recscope.data.rankings import RankedLists, Relevance
from recscope.data.readers import read_interactions, read_table
from recscope.data.splits import (
    Split,
    leave_last_n,
    random_holdout,
    temporal_split,
    temporal_split_fraction,
    user_split,
)
from recscope.data.validate import validate_interactions
from recscope.data.vocab import Vocabulary

__all__ = [
    "Interactions",
    "RankedLists",
    "Relevance",
    "Split",
    "UserSequences",
    "Vocabulary",
    "leave_last_n",
    "random_holdout",
    "read_interactions",
    "read_table",
    "temporal_split",
    "temporal_split_fraction",
    "user_split",
    "validate_interactions",
]
