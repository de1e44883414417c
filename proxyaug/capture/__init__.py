"""Attention maps captured from the training step itself: no extra forward or backward pass.

A refresh runs its own scan and its own forward and backward per chosen image. Every training
step already holds what a gradient CAM needs: the target layer's activations ``A`` in the forward
and the loss gradient ``dL/dA`` in the backward. [`MapCapture`][proxyaug.MapCapture] records both
around the user's own step (a forward hook on the target layer, a tensor hook on its output),
computes the ``spec``'s native method on them for the batch (Grad-CAM++ by default,
``MapSpec()``, as a refresh; Grad-CAM is ``ReLU(sum_k mean_hw(dL/dA_k) * A_k)``), with the loss
gradient in place of a class score's, each image's gradient scaled to a largest magnitude of 1
first (so any positive factor of the loss cancels), normalised per image as a refresh's maps
are, and stages it. Only steps that showed a sample's canonical image are staged by default (a
map in the bank describes the canonical image). ``commit`` chooses among the staged samples with
a [`selection`][proxyaug.selection] policy and writes the bank through the dataset's
[`Refreshable.commit()`][proxyaug.protocol.Refreshable.commit], in one step.

Capture only reads: no parameter, gradient, RNG or training flag changes; the hooks are removed
when the step ends, by an error too; nothing of the step (activations, gradients, graph) is kept
past it. ``core`` holds the class, ``hooks`` what a step records, ``maps`` the formula and the
frames, ``staging`` the staged samples across steps, ranks and checkpoints."""

from .core import COMMITS, VIEWS, MapCapture
from .maps import check_geometry, step_maps, to_canonical

__all__ = ["MapCapture", "COMMITS", "VIEWS", "step_maps", "to_canonical", "check_geometry"]
