"""The TOSG input container: the entity graph every cell shares (topology + frozen priors). Torch only."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class TOSGGraph:
    """The entity graph shared by every cell: topology plus frozen prior embeddings.

    Entity indices: transcripts are `0..Nt-1`, proteins `Nt..Nt+Np-1` (`N = Nt + Np`).

    Attributes:
        num_transcripts: `Nt`.
        num_proteins: `Np`.
        internal_edge_index: LongTensor `[2, Ei]`, transcript (row 0, source) → protein (row 1, target,
            global index).
        ppi_edge_index: LongTensor `[2, Ep]`, protein–protein pairs (global indices) stored once per
            unordered pair; use [`ppi_directed`] for message passing.
        name_embeddings: FloatTensor `[N, 384]`, frozen text embedding of each entity's name.
        description_embeddings: FloatTensor `[N, 384]`, frozen text embedding of each description.
        entity_version: hash of the entity table these tensors were built from.
        sequence_embeddings: optional FloatTensor `[N, S]` (protein-sequence prior), or `None`.
        sequence_present: optional BoolTensor `[N]`: True where `sequence_embeddings` holds a real
            embedding (proteins with a sequence); elsewhere the model uses a learned "missing" vector.
    """

    num_transcripts: int
    num_proteins: int
    internal_edge_index: Tensor
    ppi_edge_index: Tensor
    name_embeddings: Tensor
    description_embeddings: Tensor
    entity_version: str
    sequence_embeddings: Tensor | None = None
    sequence_present: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        """`N = Nt + Np`."""
        return self.num_transcripts + self.num_proteins

    def to(self, device: torch.device | str) -> TOSGGraph:
        """Return a copy with every tensor moved to `device`."""
        seq = None if self.sequence_embeddings is None else self.sequence_embeddings.to(device)
        present = None if self.sequence_present is None else self.sequence_present.to(device)
        return replace(
            self,
            internal_edge_index=self.internal_edge_index.to(device),
            ppi_edge_index=self.ppi_edge_index.to(device),
            name_embeddings=self.name_embeddings.to(device),
            description_embeddings=self.description_embeddings.to(device),
            sequence_embeddings=seq,
            sequence_present=present,
        )

    def validate(self) -> None:
        """Raise `ValueError` if shapes or index ranges are inconsistent."""
        n, nt = self.num_nodes, self.num_transcripts
        for name in ("name_embeddings", "description_embeddings", "sequence_embeddings"):
            t = getattr(self, name)
            if t is not None and (t.dim() != 2 or t.size(0) != n):
                raise ValueError(f"{name} must have shape [N={n}, dim], got {tuple(t.shape)}.")
        if self.sequence_present is not None and (self.sequence_present.shape != (n,)
                                                  or self.sequence_present.dtype != torch.bool):
            raise ValueError(f"sequence_present must be a bool tensor [N={n}], got {self.sequence_present.dtype} "
                             f"{tuple(self.sequence_present.shape)}.")
        for name in ("internal_edge_index", "ppi_edge_index"):
            ei = getattr(self, name)
            if ei.dim() != 2 or ei.size(0) != 2 or ei.dtype != torch.long:
                raise ValueError(f"{name} must be a LongTensor [2, E], got {ei.dtype} {tuple(ei.shape)}.")
        ie, pe = self.internal_edge_index, self.ppi_edge_index
        if ie.numel() and not (ie[0].max() < nt and ie[0].min() >= 0 and ie[1].min() >= nt and ie[1].max() < n):
            raise ValueError(
                f"internal_edge_index must go from transcripts [0, {nt}) to proteins [{nt}, {n}); "
                f"got sources in [{int(ie[0].min())}, {int(ie[0].max())}] and targets in "
                f"[{int(ie[1].min())}, {int(ie[1].max())}]."
            )
        if pe.numel() and not (pe.min() >= nt and pe.max() < n):
            raise ValueError(
                f"ppi_edge_index must only contain protein indices [{nt}, {n}); "
                f"got [{int(pe.min())}, {int(pe.max())}]."
            )


def ppi_directed(edge_index: Tensor) -> Tensor:
    """Both directions of undirected pairs: `[2, E]` (each pair once) → `[2, 2E]` (u→v then v→u)."""
    return torch.cat([edge_index, edge_index.flip(0)], dim=1)
