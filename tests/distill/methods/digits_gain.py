"""The end-to-end check every matching method passes on digits: distilling lifts a set above where it started."""

from __future__ import annotations

from augdistill.config import ModelConfig
from augdistill.data import Dataset
from augdistill.distill import Distiller
from augdistill.train import StandardProtocol, standard_accuracies

#: the small network both the distiller and the evaluation use: fast on one thread.
SMALL_CONVNET = ModelConfig("convnet", width=16, depth=2, norm="instance")


def standard_test_accuracy(d: Distiller, digits: Dataset) -> float:
    """Mean digits test accuracy of 3 :data:`SMALL_CONVNET` networks (60 epochs, seeds 0-2) trained on ``d``'s set."""
    protocol = StandardProtocol(model=SMALL_CONVNET, epochs=60)
    images = d.synthetic.decode().detach()
    return float(standard_accuracies(images, d.synthetic.labels, digits.info, digits.test, [0, 1, 2],
                                     protocol).mean())


def assert_distilling_beats_the_start(d: Distiller, digits: Dataset, iterations: int, margin: float = 0.1) -> None:
    """``iterations`` outer steps lift the set's test accuracy by more than ``margin`` over its start (one random real
    image per class there: the random-subset floor)."""
    floor = standard_test_accuracy(d, digits)
    d.fit(iterations)
    after = standard_test_accuracy(d, digits)
    assert after > floor + margin, (floor, after)
