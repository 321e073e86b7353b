"""Small architectures built from a config (kept for ``from boundcheck.harness.models import mlp``).

The architectures live in :mod:`boundcheck.harness.zoo`; this module re-exports them.
"""

from boundcheck.harness.zoo import (
    ACTIVATIONS,
    ARCHITECTURES,
    SMOOTH,
    build_model,
    lenet,
    mlp,
    resnet,
    sequence_transformer,
    vgg,
    vit,
)

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "SMOOTH", "build_model", "lenet", "mlp", "resnet",
           "sequence_transformer", "vgg", "vit"]
