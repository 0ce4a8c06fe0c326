"""Every private Keras member fashion_exp uses (Keras 3.15.1, pinned in requirements.lock), in one
place (the ledger: fashion_exp/private.py).

- `Optimizer._get_variable_index`: an optimizer's update_step is handed the backend's variable
  (TensorFlow's, which has no Keras path), and the optimizer's own index of it is the one way back
  to the Keras variable whose path names its layer (BlockAdam: the blocks' learning rate).
"""

from __future__ import annotations

from fashion_exp.private import Private

KERAS = "3.15.1"
PRIVATE = (
    Private(
        "keras:optimizers.Optimizer._get_variable_index",
        ("head/keras_private.py", "head/model.py"),
        "update_step gets the backend's variable, without the path that names its layer",
        "(self, variable)",
    ),
)


def variable_index(optimizer, variable) -> int:
    """The index, among the variables `optimizer` was built on, of the backend variable its
    update_step was handed."""
    return optimizer._get_variable_index(variable)
