"""Datasets and class-balanced sampling."""

from augdistill.data.datasets import DATASET_NAMES, Dataset, DatasetInfo, Split, load_dataset
from augdistill.data.sampling import ClassBalancedSampler, herd_per_class, take_per_class

__all__ = ["DATASET_NAMES", "Dataset", "DatasetInfo", "Split", "load_dataset",
           "ClassBalancedSampler", "herd_per_class", "take_per_class"]
