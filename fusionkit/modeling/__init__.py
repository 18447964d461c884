"""Modeling: encoders, the torch modules built on them, the feature cache and the one training loop.

Owns how text becomes vectors and logits, how a saved model's architecture is rebuilt from its spec
(``blank_encoder``), and ``train_loop``, which every strategy that trains calls.
May import: ``fusionkit.errors``, ``fusionkit._io``. Nothing here knows about tasks, strategies or studies.
"""
from fusionkit.modeling.encoders import Encoder, blank_encoder, load_encoder, pool
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.training import History, Knobs, TrainKnobs, train_loop

__all__ = ["Encoder", "blank_encoder", "load_encoder", "pool", "FeatureCache", "History", "Knobs", "TrainKnobs",
           "train_loop"]
