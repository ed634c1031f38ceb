"""The 8 dihedral transforms of a square grid, in the order of the official builders
(TRM_SPEC §3.3): ids index DIHEDRAL_NAMES; DIHEDRAL_INVERSE[k] undoes transform k."""

import numpy as np

DIHEDRAL_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_ud",
    "transpose",
    "anti_transpose",
)
DIHEDRAL_INVERSE = np.array([0, 3, 2, 1, 4, 5, 6, 7], dtype=np.int64)  # rot90 ↔ rot270
