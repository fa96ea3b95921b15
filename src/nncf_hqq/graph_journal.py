"""Re-wirings of an OpenVINO graph, recorded so that a failed compression leaves the model's graph as it was given."""

import numpy as np
import openvino as ov
from openvino import opset13 as opset


class GraphJournal:
    """The (input, previous source) pairs of every re-wiring recorded so far, undone in reverse order."""

    def __init__(self) -> None:
        self._edits: list[tuple[ov.Input, ov.Output]] = []

    def record_consumers(self, output: ov.Output) -> None:
        """Records every input that reads `output`, before they are given another source."""
        self._edits.extend((target, output) for target in output.get_target_inputs())

    def undo(self) -> None:
        """Restores every recorded input's source: the graph is again the one before the first record."""
        for target, source in reversed(self._edits):
            target.replace_source_output(source)
        self._edits = []


def replace_constant(old: ov.Node, value: np.ndarray, journal: GraphJournal | None = None) -> ov.Node:
    """
    Makes every consumer of the Constant `old` read a new Constant of `value` instead (same element type and
    friendly name), recorded in `journal` if given; returns the new Constant.
    """
    new = opset.constant(value, dtype=old.get_element_type(), name=old.get_friendly_name())
    if journal is not None:
        journal.record_consumers(old.output(0))
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(new.output(0))
    return new
