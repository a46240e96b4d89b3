"""Neural components in PyTorch: two-tower retrieval (optionally with item text), LightGCN
and SASRec, all trained by one loop (:mod:`recscope.models.neural.training`).

Importing this package registers ``two_tower``, ``lightgcn`` and ``sasrec`` with the
component registry (:func:`recscope.models.get_component`).
"""

from recscope.models.neural.lightgcn import LightGCN, LightGCNConfig
from recscope.models.neural.sasrec import SASRec, SASRecConfig
from recscope.models.neural.text import TextEncoder, item_texts, sentence_model_path
from recscope.models.neural.training import (
    NeuralComponent,
    NeuralConfig,
    TrainingHistory,
    pick_device,
    train_loop,
)
from recscope.models.neural.two_tower import TwoTower, TwoTowerConfig

__all__ = [
    "LightGCN",
    "LightGCNConfig",
    "NeuralComponent",
    "NeuralConfig",
    "SASRec",
    "SASRecConfig",
    "TextEncoder",
    "TrainingHistory",
    "TwoTower",
    "TwoTowerConfig",
    "item_texts",
    "pick_device",
    "sentence_model_path",
    "train_loop",
]
