"""What a discriminator's forward returns when the training step asks for more than its logits."""

from __future__ import annotations

from typing import NamedTuple

import torch


class DOutputs(NamedTuple):
    """None for a head (or features) a D does not have (the DCGAN baseline has only logits)."""

    logits: torch.Tensor  # [N]
    aux: torch.Tensor | None  # [N, C]: the classifier head's category logits
    twin: torch.Tensor | None  # [N, C]: its twin's, trained on fakes
    features: torch.Tensor | None  # [N, F]: what the heads read
