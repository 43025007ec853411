"""Test plugin (UNLEARN_GRID_PLUGINS=<this file>, trainables/plugins.py) for grids over tiny fixture files in
the datasets' real formats (tests/test_paper_datasets_grid.py): torchvision checks CIFAR files against
the md5 sums of the official archives, which fixture files cannot match. Keep its file-exists check,
skip the md5, in the driver and in every trial's worker."""
import os

import torchvision.datasets.cifar as tv_cifar

tv_cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
