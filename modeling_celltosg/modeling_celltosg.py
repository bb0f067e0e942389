"""CellTOSG-FM: a graph-language foundation model over Text-Omic Signaling Graphs.

Method: OmniCellTOSG (arXiv 2504.02148, §2.3 model, §4.4 pretraining), v2 by default. Each entity node
(transcript or protein) gets an identity from projected frozen text priors (name, description, optional
sequence) plus a trainable per-node offset, and transcripts an expression encoding that keeps the value's
magnitude (`embeddings.py`; v1's attention fusion + LayerNorm is `expression_encoding="fusion"`); an
internal stage passes messages transcript ↔ protein; a global stage runs `num_layers` layers over the
protein–protein interaction (PPI) graph in both directions; a last layer sends protein states back to their
transcripts. The cell classifier pools node states with several attention queries (`readout.py`) and adds
a linear path from expression to the logits (wide & deep). All cells of a batch share one topology (see
`tosg_graph.py`). `configuration_celltosg.ARCHITECTURES["v1"]` rebuilds the first, paper-style design.

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
from .embeddings import CellTOSGEmbeddings, CellTOSGModalityFusion, CellTOSGOmicEncoder
from .gat_conv import SharedGATConv
from .gcn_conv import SharedGCNConv
from .layers import CellTOSGLayer
from .readout import (
    CellTOSGAttentionPooling,
    build_readout,
    measured_node_mask,
    readout_width,
)
from .topology import memoize_on_topology
from .tosg_graph import TOSGGraph, ppi_directed

# ----------------------------------------------------------------------------------------------------------
# Encoder: internal stage (transcript → protein) + global stage (PPI), each of `layers.CellTOSGLayer`
# ----------------------------------------------------------------------------------------------------------


class CellTOSGEncoder(nn.Module):
    """Internal stage, then `num_layers` layers over the PPI graph (used in both directions), then — with
    `config.bidirectional_internal` — a protein → transcript layer.

    Internal stage: one layer over the transcript → protein edges (v1: proteins receive from their
    transcripts) or over those edges in both directions (v2: transcripts also receive their protein's
    prior). The global stage runs on the protein rows only (the PPI has no transcript nodes); PPI indices
    are global and shifted internally. The last v2 layer sends the proteins' PPI-informed states back to
    their transcripts, so a transcript's state sees its protein's interaction partners (only the
    transcript rows of its output are kept).

    Shapes: `hidden_states` `[N, B, d]`, `internal_edge_index` `[2, Ei]`, `ppi_edge_index` `[2, Ep]`
    (undirected pairs) → `[N, B, d]`, attentions (tuple of α `[E_dir, B, H]` per PPI layer, or None) and
    the directed edge index `[2, E_dir]` they refer to (or None).
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        self.bidirectional = config.bidirectional_internal
        self.internal_layer = CellTOSGLayer(config)
        self.ppi_layers = nn.ModuleList(CellTOSGLayer(config) for _ in range(config.num_layers))
        self.feedback_layer = CellTOSGLayer(config) if self.bidirectional else None

    def forward(
        self,
        hidden_states: Tensor,
        internal_edge_index: Tensor,
        ppi_edge_index: Tensor,
        num_transcripts: int,
        output_attentions: bool = False,
    ):
        internal = reverse = internal_edge_index
        if self.bidirectional:  # protein → transcript edges, and both directions, built once per edge tensor
            reverse = memoize_on_topology(internal_edge_index, ("internal_reverse",),
                                          lambda: internal_edge_index.flip(0).contiguous())
            internal = memoize_on_topology(internal_edge_index, ("internal_both",),
                                           lambda: torch.cat([internal_edge_index, reverse], dim=1))
        hidden_states, _ = self.internal_layer(hidden_states, internal)
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
        if self.feedback_layer is not None:
            transcripts = self.feedback_layer(hidden_states, reverse)[0][:num_transcripts]
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
        if isinstance(module, ZeroInitLinear) or (isinstance(module, nn.Linear) and module is getattr(self, "wide", None)):
            init.zeros_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
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
        elif isinstance(module, CellTOSGEmbeddings) and module.gene_offset is not None:
            init.zeros_(module.gene_offset)  # starts at the projected priors
        elif isinstance(module, (CellTOSGModalityFusion, CellTOSGAttentionPooling)):
            init.normal_(module.query, std=0.02)
        elif isinstance(module, SharedGATConv):
            for att in (module.att_src, module.att_dst):
                bound = math.sqrt(6.0 / (att.size(-2) + att.size(-1)))
                init.uniform_(att, -bound, bound)
        if isinstance(module, (SharedGATConv, SharedGCNConv)) and module.bias is not None:
            init.zeros_(module.bias)


def check_inputs(cfg: CellTOSGConfig, expression: Tensor, graph: TOSGGraph, measured_mask: Tensor | None) -> None:
    """Raise `ValueError` if `graph` (entity version, node counts, prior widths) or the batch (`expression`
    `[B, Nt]` float, finite; `measured_mask` bool `[B, Nt]` or None) does not match the configuration `cfg`,
    or `expression` holds NaN/Inf (the message counts them and names the first rows)."""
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
    finite = torch.isfinite(expression)
    if not bool(finite.all()):
        bad = ~finite
        cells = bad.any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"expression holds {int(bad.sum())} NaN/Inf value(s) in {int(bad.any(1).sum())} cell(s) (rows "
            f"{cells}{' …' if int(bad.any(1).sum()) > 5 else ''}); the model needs finite log1p-normalised values. "
            "Replace or drop them (a gene that was not measured is 0 with measured_mask False)."
        )


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
        """Raise `ValueError` if the graph or the batch does not match this model's configuration
        (:func:`check_inputs`)."""
        check_inputs(self.config, expression, graph, measured_mask)

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
        if self.config.ppi_scope == "measured_neighbourhood" and measured_mask is not None:
            visible = measured_neighbourhood_edges(visible, graph.internal_edge_index, measured_mask.any(0),
                                                   graph.num_transcripts, graph.num_proteins)
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


def measured_neighbourhood_edges(ppi_edge_index: Tensor, internal_edge_index: Tensor, measured: Tensor,
                                 num_transcripts: int, num_proteins: int) -> Tensor:
    """The PPI pairs between proteins of measured genes and their direct PPI neighbours (`ppi_scope =
    "measured_neighbourhood"`).

    Args:
        ppi_edge_index: `[2, E]` undirected pairs (global protein indices); internal_edge_index: `[2, Ei]`
            transcript → protein; measured: bool `[Nt]`, genes measured by any cell of the batch.

    Returns: `[2, E']` the kept columns of `ppi_edge_index` (in order). The same tensor object is returned
    for the same topology and measured set (memoised), so per-topology caches downstream stay valid.
    """
    key = ("measured_neighbourhood", hash(measured.cpu().numpy().tobytes()))

    def build() -> Tensor:
        n = num_transcripts + num_proteins
        core = torch.zeros(n, dtype=torch.bool, device=ppi_edge_index.device)
        src, dst = internal_edge_index
        core[dst[measured.to(src.device)[src]]] = True  # proteins of measured genes
        a, b = ppi_edge_index
        near = core.clone()
        near[a[core[b]]] = True  # their direct neighbours
        near[b[core[a]]] = True
        return ppi_edge_index[:, near[a] & near[b]].contiguous()

    return memoize_on_topology(ppi_edge_index, key, build)


def protein_log_degree(ppi_edge_index: Tensor, num_transcripts: int, num_proteins: int) -> Tensor:
    """`log1p` of each protein's degree in an undirected PPI stored once per pair: `[2, E]` → float `[Np]`."""
    ones = torch.ones(ppi_edge_index.numel(), device=ppi_edge_index.device)
    degree = torch.zeros(num_transcripts + num_proteins, device=ppi_edge_index.device)
    degree.index_add_(0, ppi_edge_index.reshape(-1), ones)
    return torch.log1p(degree[num_transcripts:])


class CellTOSGEdgeDecoder(nn.Module):
    """Hadamard-product MLP link decoder: `logit(u, v) = MLP(h_u ⊙ h_v)`.

    Shapes: `node_embeddings` `[N, d]` or `[B, N, d]` (per cell), `edge_index` `[2, M]` → logits `[M]` or `[B, M]`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, node_embeddings: Tensor, edge_index: Tensor) -> Tensor:
        pairs = node_embeddings[..., edge_index[0], :] * node_embeddings[..., edge_index[1], :]
        return self.mlp(pairs).squeeze(-1)


@dataclass
class CellTOSGForPreTrainingOutput(ModelOutput):
    """Output of [`CellTOSGForPreTraining`].

    Args:
        loss: `edge_loss + degree_loss_weight × degree_loss (+ expression_loss_weight × expression_loss)`.
        logits: `[2M]` edge logits (`[B, 2M]`, one row per cell, with `config.per_cell_edges`), the `M`
            positive (masked) edges first, then the `M` negatives.
        edge_loss: binary cross-entropy of `logits` against 1 (positives) / 0 (negatives).
        degree_loss: mean squared error of `degree_logits` against `log1p(PPI degree)`.
        degree_logits: `[Np]` predicted `log1p(degree)` of each protein.
        node_embeddings: `[N, d]` cell-averaged node embeddings (the degree head reads them; so does the
            edge decoder unless `config.per_cell_edges`).
        expression_loss: mean squared error of `expression_predictions` on the masked genes (when masked).
        expression_predictions: `[B, Nt]` predicted expression of every transcript (when genes are masked).
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    edge_loss: Tensor | None = None
    degree_loss: Tensor | None = None
    degree_logits: Tensor | None = None
    node_embeddings: Tensor | None = None
    expression_loss: Tensor | None = None
    expression_predictions: Tensor | None = None


class CellTOSGForPreTraining(CellTOSGPreTrainedModel):
    """CellTOSG-FM with the self-supervised objective of OmniCellTOSG §4.4 — masked PPI edge reconstruction
    plus protein degree regression — and, optionally, masked-expression modelling.

    The masked edges are removed from the visible graph by the caller (see `omnicelltosg.train.pretraining`).
    By default node embeddings are averaged over the cells before decoding (the PPI is one cell-independent
    graph: each edge is scored once per batch); with `config.per_cell_edges` every pair is scored in every
    cell. With `masked_genes`, the masked genes' values are hidden from the encoder (treated as unmeasured)
    and predicted from their transcript states (`expression_head`), weighted by
    `config.expression_loss_weight`.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__(config)
        d = config.hidden_size
        self.celltosg = CellTOSGModel(config)
        self.edge_decoder = CellTOSGEdgeDecoder(config)
        self.degree_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        # last, and only with the objective: older checkpoints' heads initialise as before, and no parameter
        # is left without a gradient (DistributedDataParallel refuses that)
        self.expression_head = nn.Linear(d, 1) if config.expression_loss_weight > 0 else None
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
        masked_genes: Tensor | None = None,
        return_dict: bool = True,
    ) -> CellTOSGForPreTrainingOutput | tuple:
        """Encode on the visible graph and score masked vs negative edges (and masked genes' values).

        Args:
            expression, graph, measured_mask: as [`CellTOSGModel.forward`].
            pos_edge_index: `[2, M]` masked true PPI pairs (global protein indices).
            neg_edge_index: `[2, M']` sampled non-interacting protein pairs.
            ppi_edge_index: `[2, E]` visible PPI pairs (masked edges excluded); None = `graph.ppi_edge_index`.
            degree_labels: float `[Np]` regression targets; None = `log1p` degree in `graph.ppi_edge_index`.
            masked_genes: bool `[B, Nt]`, measured genes to hide and predict; None = no expression loss.
        """
        visible = measured_mask
        if masked_genes is not None and self.expression_head is None:
            raise ValueError("masked_genes were given but config.expression_loss_weight is 0 (no expression head); "
                             "set expression_loss_weight > 0 to pretrain with masked-expression modelling.")
        if masked_genes is not None:
            measured = torch.ones_like(masked_genes) if measured_mask is None else measured_mask
            visible, expression_in = measured & ~masked_genes, expression.masked_fill(masked_genes, 0.0)
        else:
            expression_in = expression
        outputs = self.celltosg(expression_in, graph, measured_mask=visible, ppi_edge_index=ppi_edge_index)
        states = outputs.last_hidden_state  # [B, N, d]
        node_embeddings = states.mean(dim=0)  # [N, d]
        pairs = torch.cat([pos_edge_index, neg_edge_index], dim=1)
        logits = self.edge_decoder(states if self.config.per_cell_edges else node_embeddings, pairs)
        targets = torch.cat([logits.new_ones(pos_edge_index.size(1)), logits.new_zeros(neg_edge_index.size(1))])
        edge_loss = nn.functional.binary_cross_entropy_with_logits(logits, targets.expand_as(logits))
        if degree_labels is None:
            degree_labels = protein_log_degree(graph.ppi_edge_index, graph.num_transcripts, graph.num_proteins)
        degree_logits = self.degree_head(node_embeddings[graph.num_transcripts :]).squeeze(-1)
        degree_loss = nn.functional.mse_loss(degree_logits, degree_labels.to(degree_logits.dtype))
        loss = edge_loss + self.config.degree_loss_weight * degree_loss
        expression_loss = predictions = None
        if masked_genes is not None:
            predictions = self.expression_head(states[:, : graph.num_transcripts]).squeeze(-1)  # [B, Nt]
            expression_loss = nn.functional.mse_loss(predictions[masked_genes], expression[masked_genes]) \
                if masked_genes.any() else predictions.sum() * 0.0
            loss = loss + self.config.expression_loss_weight * expression_loss
        output = CellTOSGForPreTrainingOutput(
            loss=loss,
            logits=logits,
            edge_loss=edge_loss,
            degree_loss=degree_loss,
            degree_logits=degree_logits,
            node_embeddings=node_embeddings,
            expression_loss=expression_loss,
            expression_predictions=predictions,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def score_edges(self, node_embeddings: Tensor, edge_index: Tensor) -> Tensor:
        """Edge probabilities `[M]` for `edge_index` `[2, M]` from cell-averaged embeddings `[N, d]`."""
        return torch.sigmoid(self.edge_decoder(node_embeddings, edge_index))


# ----------------------------------------------------------------------------------------------------------
# Cell classification head
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CellTOSGCellClassifierOutput(ModelOutput):
    """Output of [`CellTOSGForCellClassification`].

    Args:
        loss: cross-entropy, when `labels` are given.
        logits: `[B, num_labels]`.
        pooling_weights: `[B, N]` attention-pooling weight of each node per cell.
        cell_embeddings: `[B, d]` the classifier MLP's hidden layer (BatchNorm → Linear → GELU of the readout), for UMAPs.
        attentions, attention_edge_index: as [`CellTOSGModelOutput`], when `output_attentions=True`.
        wide_logits / deep_logits: `[B, num_labels]` the two parts of `logits` (None where a path is off).
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    wide_logits: Tensor | None = None
    deep_logits: Tensor | None = None
    pooling_weights: Tensor | None = None
    cell_embeddings: Tensor | None = None
    attentions: tuple[Tensor, ...] | None = None
    attention_edge_index: Tensor | None = None


class ZeroInitLinear(nn.Linear):
    """A linear layer initialised to zero: the deep part's output layer in a wide & deep classifier, so the
    model starts as its (fitted) linear path and the graph part adds to it from zero."""


class CellTOSGForCellClassification(CellTOSGPreTrainedModel):
    """CellTOSG-FM with a cell-level classifier: logits = `wide(x)` + `deep(graph states)`.

    - deep (`config.deep_path`): the readout (`config.readout`: gene-wise, or attention pooling over the
      measured nodes) → BatchNorm → MLP → `num_labels`; `cell_embeddings` = the MLP's hidden layer `[B, d]`;
    - wide (`config.wide_path`, Cheng et al. 2016): one linear map from the measured expression `[Nt]`
      (0 where unmeasured) to the logits — multinomial logistic regression, fitted first by
      :func:`omnicelltosg.train.finetune`. With both, the deep output layer starts at zero, so the model
      starts as the linear model; the graph part is trained on its own loss (`deep_logits`), and logits =
      `config.wide_weight · wide + deep`, with `wide_weight` (1: the sum, 0: the graph part alone) and the
      epoch chosen on validation — the graph part is kept only where it beats the linear model there.

    `from_pretrained(pretraining_dir, num_labels=K, id2label=..., label2id=...)` reuses the encoder
    (`celltosg.*` weights) of a [`CellTOSGForPreTraining`] checkpoint and initialises the heads afresh.
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__(config)
        d, k = config.hidden_size, config.num_labels
        width = readout_width(config)
        self.celltosg = CellTOSGModel(config) if config.deep_path else None
        self.pooler = build_readout(config) if config.deep_path else None
        # BatchNorm first: pooled states differ between cells by a few percent of their magnitude
        # (most of each node state is the cell-independent prior); standardising across cells
        # lets the MLP see those differences at unit scale. momentum=None keeps exact running averages
        # (an exponential average still remembers its initial unit variance after a few dozen steps).
        output = ZeroInitLinear(d, k) if config.wide_path else nn.Linear(d, k)
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(width, momentum=None), nn.Linear(width, d), nn.GELU(), nn.Dropout(config.dropout), output
        ) if config.deep_path else None
        self.wide = nn.Linear(config.num_transcripts, k) if config.wide_path else None
        self.post_init()

    def wide_features(self, expression: Tensor, measured_mask: Tensor | None) -> Tensor:
        """Inputs of the wide path: `expression` `[B, Nt]` with unmeasured genes set to 0."""
        return expression if measured_mask is None else expression * measured_mask

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
        `[0, num_labels)` for the cross-entropy loss. Without a deep path, `cell_embeddings`,
        `pooling_weights` and attentions are None."""
        deep, wide, pooled, weights, outputs = None, None, None, None, None
        if self.celltosg is not None:
            outputs = self.celltosg(
                expression, graph, measured_mask=measured_mask, ppi_edge_index=ppi_edge_index,
                output_attentions=output_attentions,
            )
            pooled, weights = self.pooler(outputs.last_hidden_state, measured_node_mask(measured_mask, graph))
            pooled = self.classifier[:3](pooled)  # BatchNorm → Linear → GELU: the cell embedding [B, d]
            deep = self.classifier[3:](pooled)
        else:
            check_inputs(self.config, expression, graph, measured_mask)
        if self.wide is not None:
            wide = self.wide(self.wide_features(expression, measured_mask))
        logits = wide if deep is None else deep if wide is None else self.config.wide_weight * wide + deep
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        output = CellTOSGCellClassifierOutput(
            loss=loss,
            logits=logits,
            wide_logits=wide,
            deep_logits=deep,
            pooling_weights=weights,
            cell_embeddings=pooled,
            attentions=None if outputs is None else outputs.attentions,
            attention_edge_index=None if outputs is None else outputs.attention_edge_index,
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
    "ZeroInitLinear",
    "protein_log_degree",
]
