"""CellTOSG-FM: a graph-language foundation model over Text-Omic Signaling Graphs.

Method: OmniCellTOSG (arXiv 2504.02148, §2.3 model, §4.4 pretraining). Each entity node (transcript or
protein) gets an omic token (expression for transcripts, a learned type embedding for unmeasured
proteins) and projected frozen text priors (name, description, optional sequence); a cross-modal fusion
module mixes them; an internal stage passes messages transcript → protein; a global stage runs
`num_layers` layers over the protein–protein interaction (PPI) graph in both directions. All cells of a
batch share one topology (see `tosg_graph.py`).

Built bottom-up: embeddings → encoder (its layer: `layers.py`) → `CellTOSGPreTrainedModel` → `CellTOSGModel` → heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_celltosg import CellTOSGConfig
from .gat_conv import SharedGATConv
from .gcn_conv import SharedGCNConv
from .layers import CellTOSGLayer
from .topology import memoize_on_topology
from .tosg_graph import TOSGGraph, ppi_directed

# ----------------------------------------------------------------------------------------------------------
# Embeddings: omic encoder + frozen priors + cross-modal fusion
# ----------------------------------------------------------------------------------------------------------


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
    """Initial node states: omic token fused with linearly projected frozen priors.

    Shapes: `expression` `[B, Nt]`, `measured_mask` `[B, Nt]` or None, `graph` a [`TOSGGraph`] →
    `[N, B, d]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        text = config.prior_source == "text"
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
        # prior_source="learned": a free node embedding replaces the priors (same width, no knowledge).
        self.node_embedding = (
            nn.Embedding(config.num_transcripts + config.num_proteins, d)
            if config.prior_source == "learned" else None
        )
        self.fusion = CellTOSGModalityFusion(config)

    def forward(self, expression: Tensor, measured_mask: Tensor | None, graph: TOSGGraph) -> Tensor:
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


# ----------------------------------------------------------------------------------------------------------
# Encoder: internal stage (transcript → protein) + global stage (PPI), each of `layers.CellTOSGLayer`
# ----------------------------------------------------------------------------------------------------------


class CellTOSGEncoder(nn.Module):
    """Internal stage (one layer over transcript → protein edges: proteins receive from their
    transcripts) followed by `num_layers` layers over the PPI graph, used in both directions.

    The global stage runs on the protein rows only (the PPI has no transcript nodes, which keep their
    internal-stage states); PPI indices are global and shifted internally.

    Shapes: `hidden_states` `[N, B, d]`, `internal_edge_index` `[2, Ei]`, `ppi_edge_index` `[2, Ep]`
    (undirected pairs) → `[N, B, d]`, attentions (tuple of α `[E_dir, B, H]` per PPI layer, or None) and
    the directed edge index `[2, E_dir]` they refer to (or None).
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        self.internal_layer = CellTOSGLayer(config)
        self.ppi_layers = nn.ModuleList(CellTOSGLayer(config) for _ in range(config.num_layers))

    def forward(
        self,
        hidden_states: Tensor,
        internal_edge_index: Tensor,
        ppi_edge_index: Tensor,
        num_transcripts: int,
        output_attentions: bool = False,
    ):
        hidden_states, _ = self.internal_layer(hidden_states, internal_edge_index)
        transcripts, proteins = hidden_states[:num_transcripts], hidden_states[num_transcripts:]
        directed = memoize_on_topology(  # protein-local indices, built once per PPI edge tensor
            ppi_edge_index, ("ppi_local", num_transcripts), lambda: ppi_directed(ppi_edge_index) - num_transcripts)
        attentions, attention_edge_index = [], None
        for layer in self.ppi_layers:
            proteins, attention = layer(proteins, directed, output_attentions)
            if attention is not None:
                attention_edge_index, alpha = attention
                attentions.append(alpha)
        if attention_edge_index is not None:
            attention_edge_index = attention_edge_index + num_transcripts  # back to global indices
        hidden_states = torch.cat([transcripts, proteins], dim=0)
        return hidden_states, (tuple(attentions) if output_attentions else None), attention_edge_index


# ----------------------------------------------------------------------------------------------------------
# Pretrained base and bare model
# ----------------------------------------------------------------------------------------------------------


class CellTOSGPreTrainedModel(PreTrainedModel):
    """Base class: configuration, weight initialisation and `save_pretrained` / `from_pretrained`."""

    config_class = CellTOSGConfig
    config: CellTOSGConfig
    base_model_prefix = "celltosg"
    main_input_name = "expression"

    # Every head is listed so a saved folder loads with any of these Auto classes and trust_remote_code=True.
    remote_auto_map = {
        "AutoConfig": "configuration_celltosg.CellTOSGConfig",
        "AutoModel": "modeling_celltosg.CellTOSGModel",
        "AutoModelForPreTraining": "modeling_celltosg.CellTOSGForPreTraining",
        "AutoModelForSequenceClassification": "modeling_celltosg.CellTOSGForCellClassification",
    }

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, writing the Python files and an `auto_map` naming every
        CellTOSG class when the class is registered for auto classes (importing `modeling_celltosg` does)."""
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.remote_auto_map}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        """Glorot linear weights (as PyG) with zero biases, unit LayerNorm / BatchNorm, N(0, 0.02) learned embeddings
        and queries, N(0, 0.1) learned node embeddings, Glorot GAT attention vectors."""
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Embedding):  # prior_source="learned": about the scale of projected priors
            init.normal_(module.weight, std=0.1)
        elif isinstance(module, CellTOSGOmicEncoder):
            init.normal_(module.unmeasured_embedding, std=0.02)
            init.normal_(module.protein_type_embedding, std=0.02)
        elif isinstance(module, (CellTOSGModalityFusion, CellTOSGAttentionPooling)):
            init.normal_(module.query, std=0.02)
        elif isinstance(module, SharedGATConv):
            for att in (module.att_src, module.att_dst):
                bound = math.sqrt(6.0 / (att.size(-2) + att.size(-1)))
                init.uniform_(att, -bound, bound)
        if isinstance(module, (SharedGATConv, SharedGCNConv)) and module.bias is not None:
            init.zeros_(module.bias)


@dataclass
class CellTOSGModelOutput(ModelOutput):
    """Output of [`CellTOSGModel`].

    Args:
        last_hidden_state: `[B, N, d]` node embeddings per cell.
        attentions: tuple (one per PPI layer) of α `[E_dir, B, H]` (GCN: normalisation coefficients,
            `H = 1`), when `output_attentions=True`.
        attention_edge_index: `[2, E_dir]` directed PPI edges (self-loops included for GCN/GAT) that the
            α refer to; source = row 0.
    """

    last_hidden_state: Tensor | None = None
    attentions: tuple[Tensor, ...] | None = None
    attention_edge_index: Tensor | None = None


class CellTOSGModel(CellTOSGPreTrainedModel):
    """The bare CellTOSG-FM encoder: per-cell node embeddings over a shared [`TOSGGraph`].

    The model records the entity-table version it was trained on (`config.entity_version`) and refuses a
    graph built from another version, since node `i` would then mean a different gene or protein.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__(config)
        self.embeddings = CellTOSGEmbeddings(config)
        self.encoder = CellTOSGEncoder(config)
        self.post_init()

    def check_inputs(self, expression: Tensor, graph: TOSGGraph, measured_mask: Tensor | None) -> None:
        """Raise `ValueError` if the graph or the batch does not match this model's configuration."""
        cfg = self.config
        if cfg.entity_version and graph.entity_version != cfg.entity_version:
            raise ValueError(
                f"Graph entity_version {graph.entity_version!r} does not match the model's "
                f"config.entity_version {cfg.entity_version!r}: node indices would refer to different "
                f"entities. Load the dataset built with entity table {cfg.entity_version!r}."
            )
        if (graph.num_transcripts, graph.num_proteins) != (cfg.num_transcripts, cfg.num_proteins):
            raise ValueError(
                f"Graph has {graph.num_transcripts} transcripts and {graph.num_proteins} proteins; the model "
                f"expects {cfg.num_transcripts} and {cfg.num_proteins}."
            )
        expected = {
            "name_embeddings": cfg.name_embedding_dim,
            "description_embeddings": cfg.description_embedding_dim,
            "sequence_embeddings": cfg.sequence_embedding_dim or None,
        }
        for name, dim in expected.items():
            t = getattr(graph, name)
            width = None if t is None else t.size(-1)
            if dim is None:  # a model without a sequence prior ignores one the graph may carry
                continue
            if width != dim:
                raise ValueError(f"graph.{name} has width {width}; the model expects {dim} (None = absent).")
        if expression.dim() != 2 or expression.size(1) != cfg.num_transcripts:
            raise ValueError(
                f"expression must be [B, Nt={cfg.num_transcripts}] (cells × transcripts), got {tuple(expression.shape)}."
            )
        if measured_mask is not None and (measured_mask.shape != expression.shape or measured_mask.dtype != torch.bool):
            raise ValueError(
                f"measured_mask must be a bool tensor shaped like expression {tuple(expression.shape)}, got "
                f"{measured_mask.dtype} {tuple(measured_mask.shape)}."
            )

    def forward(
        self,
        expression: Tensor,
        graph: TOSGGraph,
        measured_mask: Tensor | None = None,
        ppi_edge_index: Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
    ) -> CellTOSGModelOutput | tuple:
        """Encode a batch of cells.

        Args:
            expression: float32 `[B, Nt]`, `log1p` of counts per 10k on transcript nodes.
            graph: the shared [`TOSGGraph`].
            measured_mask: bool `[B, Nt]`; False = gene not measured (value unknown). None = all measured.
            ppi_edge_index: `[2, E]` undirected PPI pairs to pass messages over, overriding
                `graph.ppi_edge_index` (the visible edges while masking).
            output_attentions: also return per-layer PPI attention α `[E_dir, B, H]`.
            return_dict: return a [`CellTOSGModelOutput`] (else a tuple).
        """
        self.check_inputs(expression, graph, measured_mask)
        hidden_states = self.embeddings(expression, measured_mask, graph)
        visible = graph.ppi_edge_index if ppi_edge_index is None else ppi_edge_index
        hidden_states, attentions, attention_edge_index = self.encoder(
            hidden_states, graph.internal_edge_index, visible, graph.num_transcripts, output_attentions
        )
        output = CellTOSGModelOutput(
            last_hidden_state=hidden_states.transpose(0, 1),
            attentions=attentions,
            attention_edge_index=attention_edge_index,
        )
        return output if return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------------------------
# Pretraining head: masked PPI edges + degree regression
# ----------------------------------------------------------------------------------------------------------


def protein_log_degree(ppi_edge_index: Tensor, num_transcripts: int, num_proteins: int) -> Tensor:
    """`log1p` of each protein's degree in an undirected PPI stored once per pair: `[2, E]` → float `[Np]`."""
    ones = torch.ones(ppi_edge_index.numel(), device=ppi_edge_index.device)
    degree = torch.zeros(num_transcripts + num_proteins, device=ppi_edge_index.device)
    degree.index_add_(0, ppi_edge_index.reshape(-1), ones)
    return torch.log1p(degree[num_transcripts:])


class CellTOSGEdgeDecoder(nn.Module):
    """Hadamard-product MLP link decoder: `logit(u, v) = MLP(h_u ⊙ h_v)`.

    Shapes: `node_embeddings` `[N, d]`, `edge_index` `[2, M]` → logits `[M]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, node_embeddings: Tensor, edge_index: Tensor) -> Tensor:
        return self.mlp(node_embeddings[edge_index[0]] * node_embeddings[edge_index[1]]).squeeze(-1)


@dataclass
class CellTOSGForPreTrainingOutput(ModelOutput):
    """Output of [`CellTOSGForPreTraining`].

    Args:
        loss: `edge_loss + degree_loss_weight × degree_loss`.
        logits: `[2M]` edge logits, the `M` positive (masked) edges first, then the `M` negatives.
        edge_loss: binary cross-entropy of `logits` against 1 (positives) / 0 (negatives).
        degree_loss: mean squared error of `degree_logits` against `log1p(PPI degree)`.
        degree_logits: `[Np]` predicted `log1p(degree)` of each protein.
        node_embeddings: `[N, d]` cell-averaged node embeddings the decoders used.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    edge_loss: Tensor | None = None
    degree_loss: Tensor | None = None
    degree_logits: Tensor | None = None
    node_embeddings: Tensor | None = None


class CellTOSGForPreTraining(CellTOSGPreTrainedModel):
    """CellTOSG-FM with the self-supervised objective of OmniCellTOSG §4.4: masked PPI edge
    reconstruction plus protein degree regression.

    The masked edges are removed from the visible graph by the caller (see `omnicelltosg.train.pretraining`). Node
    embeddings are averaged over the cell dimension before decoding, because the PPI is one
    cell-independent graph: each edge is scored once per batch, not once per cell.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__(config)
        d = config.hidden_size
        self.celltosg = CellTOSGModel(config)
        self.edge_decoder = CellTOSGEdgeDecoder(config)
        self.degree_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.post_init()

    def forward(
        self,
        expression: Tensor,
        graph: TOSGGraph,
        pos_edge_index: Tensor,
        neg_edge_index: Tensor,
        measured_mask: Tensor | None = None,
        ppi_edge_index: Tensor | None = None,
        degree_labels: Tensor | None = None,
        return_dict: bool = True,
    ) -> CellTOSGForPreTrainingOutput | tuple:
        """Encode on the visible graph and score masked vs negative edges.

        Args:
            expression, graph, measured_mask: as [`CellTOSGModel.forward`].
            pos_edge_index: `[2, M]` masked true PPI pairs (global protein indices).
            neg_edge_index: `[2, M']` sampled non-interacting protein pairs.
            ppi_edge_index: `[2, E]` visible PPI pairs (masked edges excluded); None = `graph.ppi_edge_index`.
            degree_labels: float `[Np]` regression targets; None = `log1p` degree in `graph.ppi_edge_index`.
        """
        outputs = self.celltosg(expression, graph, measured_mask=measured_mask, ppi_edge_index=ppi_edge_index)
        node_embeddings = outputs.last_hidden_state.mean(dim=0)  # [N, d]
        logits = self.edge_decoder(node_embeddings, torch.cat([pos_edge_index, neg_edge_index], dim=1))
        targets = torch.cat([logits.new_ones(pos_edge_index.size(1)), logits.new_zeros(neg_edge_index.size(1))])
        edge_loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        if degree_labels is None:
            degree_labels = protein_log_degree(graph.ppi_edge_index, graph.num_transcripts, graph.num_proteins)
        degree_logits = self.degree_head(node_embeddings[graph.num_transcripts :]).squeeze(-1)
        degree_loss = nn.functional.mse_loss(degree_logits, degree_labels.to(degree_logits.dtype))
        output = CellTOSGForPreTrainingOutput(
            loss=edge_loss + self.config.degree_loss_weight * degree_loss,
            logits=logits,
            edge_loss=edge_loss,
            degree_loss=degree_loss,
            degree_logits=degree_logits,
            node_embeddings=node_embeddings,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def score_edges(self, node_embeddings: Tensor, edge_index: Tensor) -> Tensor:
        """Edge probabilities `[M]` for `edge_index` `[2, M]` from cell-averaged embeddings `[N, d]`."""
        return torch.sigmoid(self.edge_decoder(node_embeddings, edge_index))


# ----------------------------------------------------------------------------------------------------------
# Cell classification head
# ----------------------------------------------------------------------------------------------------------


def measured_node_mask(measured_mask: Tensor | None, graph: TOSGGraph) -> Tensor | None:
    """Bool `[B, N]`: measured transcripts and every protein with at least one measured transcript
    (along `graph.internal_edge_index`); None when `measured_mask` is None (everything measured)."""
    if measured_mask is None:
        return None
    src, dst = graph.internal_edge_index
    proteins = torch.zeros(measured_mask.size(0), graph.num_proteins, device=measured_mask.device)
    proteins.index_add_(1, dst - graph.num_transcripts, measured_mask[:, src].float())
    return torch.cat([measured_mask, proteins > 0], dim=1)


class CellTOSGAttentionPooling(nn.Module):
    r"""Attention pooling over nodes: :math:`a_{c,n} = \mathrm{softmax}_n(q^\top \tanh(W h_{c,n}) / \sqrt d)`,
    :math:`z_c = \sum_n a_{c,n} h_{c,n}`. Parameters are `O(d²)`, independent of `N`.

    Shapes: `hidden_states` `[B, N, d]`, optional `node_mask` bool `[B, N]` (nodes that may be pooled;
    the classifier passes measured transcripts and the proteins they encode, so the thousands of nodes
    whose state is identical in every cell do not drown the signal) → pooled `[B, d]`, weights `[B, N]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        self.key = nn.Linear(d, d)
        self.query = nn.Parameter(torch.zeros(d))

    def forward(self, hidden_states: Tensor, node_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = torch.tanh(self.key(hidden_states)) @ self.query / math.sqrt(self.query.numel())
        if node_mask is not None:
            scores = scores.masked_fill(~node_mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bn,bnd->bd", weights, hidden_states), weights


@dataclass
class CellTOSGCellClassifierOutput(ModelOutput):
    """Output of [`CellTOSGForCellClassification`].

    Args:
        loss: cross-entropy, when `labels` are given.
        logits: `[B, num_labels]`.
        pooling_weights: `[B, N]` attention-pooling weight of each node per cell.
        cell_embeddings: `[B, d]` pooled cell representation the classifier head reads (for UMAPs).
        attentions, attention_edge_index: as [`CellTOSGModelOutput`], when `output_attentions=True`.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    pooling_weights: Tensor | None = None
    cell_embeddings: Tensor | None = None
    attentions: tuple[Tensor, ...] | None = None
    attention_edge_index: Tensor | None = None


class CellTOSGForCellClassification(CellTOSGPreTrainedModel):
    """CellTOSG-FM with a cell-level classifier: attention pooling over nodes → MLP → `num_labels` logits.

    `from_pretrained(pretraining_dir, num_labels=K, id2label=..., label2id=...)` reuses the encoder
    (`celltosg.*` weights) of a [`CellTOSGForPreTraining`] checkpoint and initialises the head afresh.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__(config)
        d = config.hidden_size
        self.celltosg = CellTOSGModel(config)
        self.pooler = CellTOSGAttentionPooling(config)
        # BatchNorm first: pooled states differ between cells by a few percent of their magnitude
        # (most of each node state is the cell-independent prior); standardising across cells
        # lets the MLP see those differences at unit scale. momentum=None keeps exact running averages
        # (an exponential average still remembers its initial unit variance after a few dozen steps).
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(d, momentum=None), nn.Linear(d, d), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(d, config.num_labels)
        )
        self.post_init()

    def forward(
        self,
        expression: Tensor,
        graph: TOSGGraph,
        measured_mask: Tensor | None = None,
        labels: Tensor | None = None,
        ppi_edge_index: Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
    ) -> CellTOSGCellClassifierOutput | tuple:
        """Classify cells. Args as [`CellTOSGModel.forward`], plus `labels` LongTensor `[B]` in
        `[0, num_labels)` for the cross-entropy loss."""
        outputs = self.celltosg(
            expression, graph, measured_mask=measured_mask, ppi_edge_index=ppi_edge_index,
            output_attentions=output_attentions,
        )
        pooled, weights = self.pooler(outputs.last_hidden_state, measured_node_mask(measured_mask, graph))
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        output = CellTOSGCellClassifierOutput(
            loss=loss,
            logits=logits,
            pooling_weights=weights,
            cell_embeddings=pooled,
            attentions=outputs.attentions,
            attention_edge_index=outputs.attention_edge_index,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "CellTOSGPreTrainedModel",
    "CellTOSGModel",
    "CellTOSGModelOutput",
    "CellTOSGForPreTraining",
    "CellTOSGForPreTrainingOutput",
    "CellTOSGForCellClassification",
    "CellTOSGCellClassifierOutput",
    "protein_log_degree",
]
