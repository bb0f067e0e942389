"""Initial node states of CellTOSG-FM: the omic token of each transcript and cell, each node's identity
from its frozen text/sequence priors (or a learned embedding), and how the two are combined.

Two encodings (`CellTOSGConfig.expression_encoding`):

- `"fusion"` (v1, the paper-style design, OmniCellTOSG arXiv 2504.02148 §2.3): tokens fused by a small
  attention and LayerNorm (`CellTOSGModalityFusion`).
- `"gene_affine"` (v2): `e_g + x · W_v e_g + MLP(x)` — no normalisation, so the value's magnitude is kept, and
  a per-gene direction (`W_v e_g`) makes the same value mean different things for different genes; with
  `trainable_gene_embedding`, `e_g` = projected priors + a trainable per-node offset that starts at zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .configuration_celltosg import CellTOSGConfig
from .tosg_graph import TOSGGraph


class CellTOSGOmicEncoder(nn.Module):
    """Omic token per node and cell.

    Transcripts: `log1p` expression value → `d` by a two-layer MLP; where `measured_mask` is False the
    value is unknown (not zero) and a learned "unmeasured" embedding is used instead. Proteins are not
    measured: their omic token is one learned protein type embedding `[1, 1, d]`, the same for every cell.

    With `identity` (`[Nt, 1, d]`, the gene's projected priors) the token is
    `MLP(x) + x · identity`, so the token of a measured gene depends on which gene it is.

    Shapes: `expression` float `[B, Nt]`, `measured_mask` bool `[B, Nt]` or None (all measured) →
    transcript tokens `[Nt, B, d]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        self.value_mlp = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        self.unmeasured_embedding = nn.Parameter(torch.zeros(d))
        self.protein_type_embedding = nn.Parameter(torch.zeros(d))

    def forward(self, expression: Tensor, measured_mask: Tensor | None, identity: Tensor | None = None) -> Tensor:
        value = expression.t().unsqueeze(-1)  # [Nt, B, 1]
        transcripts = self.value_mlp(value)  # [Nt, B, d]
        if identity is not None:  # [Nt, 1, d] gene-identity vector from the priors
            transcripts = transcripts + value * identity
        if measured_mask is not None:
            transcripts = torch.where(measured_mask.t().unsqueeze(-1), transcripts, self.unmeasured_embedding)
        return transcripts


class CellTOSGModalityFusion(nn.Module):
    r"""Cross-modal fusion: a tiny attention over the modality tokens of each node (our design choice;
    the paper fuses modalities before the graph encoder, §2.3).

    For tokens :math:`t_m` (omic, name, description, optional sequence), keys
    :math:`k_m = \tanh(W t_m)`, scores :math:`s_m = q^\top k_m / \sqrt d` with a learned query `q`,
    weights :math:`w = \mathrm{softmax}_m(s)` per node and cell, output
    :math:`\mathrm{LN}(t_0 + \sum_m w_m t_m)`: the first (omic) token also enters through a residual
    path, so a cell's measurement is never averaged away by its cell-independent priors. The weights
    show how much each node relies on its measurement versus its text priors.

    Shapes: tokens each `[N, B, d]` or `[N, 1, d]` (cell-independent priors broadcast) → `[N, B, d]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        self.key = nn.Linear(d, d)
        self.query = nn.Parameter(torch.zeros(d))
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: list[Tensor]) -> Tensor:
        scale = 1.0 / math.sqrt(self.query.numel())
        scores = [torch.tanh(self.key(t)) @ self.query * scale for t in tokens]  # each [N, B] or [N, 1]
        weights = torch.softmax(torch.stack(torch.broadcast_tensors(*scores), dim=-1), dim=-1)  # [N, B, M]
        fused = sum(weights[..., m : m + 1] * t for m, t in enumerate(tokens))
        return self.norm(tokens[0] + fused)


class CellTOSGEmbeddings(nn.Module):
    """Initial node states: each node's identity (projected frozen priors, a learned embedding, or none, plus
    an optional trainable per-node offset) combined with the omic token by `config.expression_encoding`.

    Shapes: `expression` `[B, Nt]`, `measured_mask` `[B, Nt]` or None, `graph` a [`TOSGGraph`] →
    `[N, B, d]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        text = config.prior_source == "text"
        self.encoding = config.expression_encoding
        self.omic_encoder = CellTOSGOmicEncoder(config)
        self.name_projection = nn.Linear(config.name_embedding_dim, d) if text else None
        self.description_projection = nn.Linear(config.description_embedding_dim, d) if text else None
        self.sequence_projection = (
            nn.Linear(config.sequence_embedding_dim, d) if text and config.sequence_embedding_dim > 0 else None
        )
        # Entities without a sequence (transcripts, proteins without one) get a learned vector, not a zero
        # projection that would look like a real, very short sequence.
        self.missing_sequence = (
            nn.Parameter(torch.randn(d) * 0.02) if self.sequence_projection is not None else None
        )
        num_nodes = config.num_transcripts + config.num_proteins
        # prior_source="learned": a free node embedding replaces the priors (same width, no knowledge).
        self.node_embedding = nn.Embedding(num_nodes, d) if config.prior_source == "learned" else None
        # v2: a trainable offset per node on top of the projected priors (zero at the start: priors help
        # start, weight decay pulls back toward them, but they do not cage).
        self.gene_offset = (nn.Parameter(torch.zeros(num_nodes, d))
                            if config.trainable_gene_embedding and config.prior_source != "learned" else None)
        if self.encoding == "fusion":
            self.fusion = CellTOSGModalityFusion(config)
        else:
            self.value_direction = nn.Linear(d, d, bias=False)

    def prior_tokens(self, graph: TOSGGraph) -> list[Tensor]:
        """The cell-independent identity tokens of every node, each `[N, 1, d]` (empty for `prior_source="none"`)."""
        if self.node_embedding is not None:
            priors = [self.node_embedding.weight.unsqueeze(1)]
        elif self.name_projection is not None:
            priors = [
                self.name_projection(graph.name_embeddings).unsqueeze(1),
                self.description_projection(graph.description_embeddings).unsqueeze(1),
            ]
        else:
            priors = []
        if self.sequence_projection is not None:
            seq = self.sequence_projection(graph.sequence_embeddings)
            present = graph.sequence_present
            if present is not None:
                seq = torch.where(present.unsqueeze(-1), seq, self.missing_sequence.to(seq.dtype))
            priors.append(seq.unsqueeze(1))
        return priors

    def forward(self, expression: Tensor, measured_mask: Tensor | None, graph: TOSGGraph) -> Tensor:
        priors = self.prior_tokens(graph)
        if self.encoding == "fusion":
            return self._fusion_states(expression, measured_mask, graph, priors)
        nt = graph.num_transcripts
        identity = sum(priors) if priors else None
        if self.gene_offset is not None:
            identity = self.gene_offset.unsqueeze(1) if identity is None else identity + self.gene_offset.unsqueeze(1)
        if identity is None:
            identity = expression.new_zeros(graph.num_nodes, 1, self.value_direction.in_features)
        value = expression.t().unsqueeze(-1)  # [Nt, B, 1]
        gene = identity[:nt]
        transcripts = gene + value * self.value_direction(gene) + self.omic_encoder.value_mlp(value)
        if measured_mask is not None:
            unknown = gene + self.omic_encoder.unmeasured_embedding
            transcripts = torch.where(measured_mask.t().unsqueeze(-1), transcripts, unknown)
        proteins = identity[nt:] + self.omic_encoder.protein_type_embedding  # [Np, 1, d]
        return torch.cat([transcripts, proteins.expand(-1, transcripts.size(1), -1)], dim=0)

    def _fusion_states(self, expression: Tensor, measured_mask: Tensor | None, graph: TOSGGraph,
                       priors: list[Tensor]) -> Tensor:
        """v1: attention fusion of the omic token with the prior tokens, then LayerNorm."""
        if self.gene_offset is not None:
            priors = [*priors, self.gene_offset.unsqueeze(1)]
        nt = graph.num_transcripts
        # Gene-aware omic token: the value also scales the gene's own prior vector, so that summing
        # tokens over genes is a prior-parameterised linear map of the expression profile (a value MLP
        # alone gives every gene the same token for the same value and pooling then loses the profile).
        identity = sum(p[:nt] for p in priors) if priors else None  # [Nt, 1, d]
        omic = self.omic_encoder(expression, measured_mask, identity)
        transcripts = self.fusion([omic] + [p[:nt] for p in priors])
        # Protein tokens do not depend on the cell: fuse once ([Np, 1, d]) and broadcast over the batch.
        protein_type = self.omic_encoder.protein_type_embedding.view(1, 1, -1).expand(graph.num_proteins, 1, -1)
        proteins = self.fusion([protein_type] + [p[nt:] for p in priors])
        return torch.cat([transcripts, proteins.expand(-1, transcripts.size(1), -1)], dim=0)


__all__ = ["CellTOSGOmicEncoder", "CellTOSGModalityFusion", "CellTOSGEmbeddings"]
