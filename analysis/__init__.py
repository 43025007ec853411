"""Pure functions on saved outputs (logits, labels, run tables): metrics, attacks, tables, figures.

    metrics      accuracies and softmax helpers (start here)
    attacks      SVM-MIA and MIA-NN (the nearest-neighbour class c* and its reference A_c*)
    ulira        U-LiRA's likelihood-ratio attack over shadow models
    objective    the searches' objectives (retrain_gap, mia_nn_gap)
    tables       the paper's tables from a tidy frame of runs: build_tables' building blocks
    figures      the paper's figures as PNG files
    diagnostics  confusion matrices, where forget-class predictions go, per-class drops
    neighbours   does a similarity's top class agree with Retrain's c*?

No Ray, no torch, no training here: everything takes numpy arrays or pandas frames. Imports nothing
from trainables, grid or bench (tests/test_layering.py).
"""
