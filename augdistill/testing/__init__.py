"""Independent reference implementations that tests and benchmarks compare the library against."""

from augdistill.testing.reference import higher_hypergradients

__all__ = ["higher_hypergradients"]
