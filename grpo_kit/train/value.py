"""PPO's value model: a transformer backbone (``AutoModel``) with a scalar head.

The value of completion token t is read at the column whose hidden state predicts it (``P-1+t``),
the same alignment as the policy's log-probs: V_t estimates the return from the state in which
token t is chosen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from grpo_kit.hub import load_pretrained
from grpo_kit.train.batch import Batch

HEAD_FILE = "value_head.pt"


class ValueModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # start from V = 0: no bias in the first advantages
        nn.init.zeros_(self.head.bias)

    @classmethod
    def load(cls, path: str, dtype: torch.dtype, device: torch.device) -> "ValueModel":
        """The backbone of ``path`` (a local folder or a hub id), and its head if a checkpoint saved one."""
        def backbone_of(p: str):
            from transformers import AutoModel  # seconds to import: after the hub check

            return AutoModel.from_pretrained(p, dtype=dtype)

        backbone = load_pretrained(backbone_of, path,
                                   setting="algorithm.value.model (default: model.path)",
                                   what="a value backbone")
        model = cls(backbone, backbone.config.hidden_size).to(device=device, dtype=dtype)
        head = Path(path) / HEAD_FILE
        if head.is_file():  # a value model saved by a checkpoint
            model.head.load_state_dict(torch.load(head, weights_only=True))
        return model

    def save(self, path: Path) -> None:
        self.backbone.save_pretrained(path)
        torch.save(self.head.state_dict(), path / HEAD_FILE)

    def forward(self, batch: Batch, autocast: bool = False) -> torch.Tensor:
        """Values ``[N, T]`` of the completion tokens."""
        from contextlib import nullcontext

        T, P = batch.completion_ids.shape[1], batch.prompt_len
        pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
        ctx = torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16) if autocast else nullcontext()
        with ctx:
            hidden = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                   position_ids=pos, use_cache=False).last_hidden_state  # [N, P+T, H]
            values = self.head(hidden[:, P - 1:P + T - 1]).squeeze(-1)  # [N, T]
        return values.float()
