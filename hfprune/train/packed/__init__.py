"""Packed training: K jobs of one architecture trained together as one stacked model.

Each job keeps what a run of :func:`hfprune.train.trainer.train` alone would have: its initial weights, masks,
data order and seed, optimizer state and schedule. :func:`train_packed` trains a pack; :func:`calibrate_pack_size`
measures which pack size trains the most jobs per second on a device (1 where one at a time is fastest).
"""

from hfprune.train.packed.calibrate import PackCalibration, calibrate_pack_size
from hfprune.train.packed.engine import TOLERANCE, train_packed
from hfprune.train.packed.jobs import PackedJob, pack_key

__all__ = ["PackCalibration", "PackedJob", "TOLERANCE", "calibrate_pack_size", "pack_key", "train_packed"]
