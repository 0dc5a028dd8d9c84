"""Independent reference implementations that tests and benchmarks compare the library against."""

from augdistill.testing.reference import assert_unroll_matches_higher, higher_hypergradients

__all__ = ["assert_unroll_matches_higher", "higher_hypergradients"]
