"""CellTOSG-FM model configuration.

Every hyper-parameter of CellTOSG-FM (OmniCellTOSG, arXiv 2504.02148 §2.3/§4.4) is a typed, defaulted
field here; the graph topology and the frozen text priors are *data* (see `tosg_graph.TOSGGraph`), so the
configuration only records their sizes and the entity-table version the weights were trained on. How
the model is trained (mask ratio, steps, ...) is not part of it: see `omnicelltosg.train.arguments`.

The defaults are the v2 architecture sized for CPU machines (the demo and the evaluation use them);
`ARCHITECTURES["v1"]` names the fields that rebuild the first, paper-style design. Configurations saved
before `mask_ratio` moved to the training arguments still load (the key is kept as an unknown attribute);
checkpoints saved before the v2 fields existed are not loadable (their readout query has another shape):
retrain them with `**ARCHITECTURES["v1"]`.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

LAYER_TYPES = ("gcn", "gat", "gatv2", "transformer")
PRIOR_SOURCES = ("text", "learned", "none")
#: How a transcript's measured value becomes its node state (`CellTOSGConfig.expression_encoding`).
EXPRESSION_ENCODINGS = ("fusion", "gene_affine")
#: How node states become one cell vector (`CellTOSGConfig.readout`).
READOUTS = ("attention", "multi_query", "gene_wise")
#: Which PPI edges carry messages (`CellTOSGConfig.ppi_scope`).
PPI_SCOPES = ("all", "measured_neighbourhood")
#: Named architecture variants: `CellTOSGConfig.for_graph(graph, **ARCHITECTURES["v1"])` rebuilds the
#: paper-style design the project shipped first (frozen priors fused by attention and LayerNorm, messages
#: transcript → protein only, one attention query, no linear path); "v2" is the class defaults.
ARCHITECTURES = {
    "v1": {"expression_encoding": "fusion", "trainable_gene_embedding": False, "bidirectional_internal": False,
           "readout": "attention", "num_readout_queries": 1, "wide_path": False, "deep_path": True},
    "v2": {},
}


@strict
class CellTOSGConfig(PreTrainedConfig):
    r"""Configuration of [`CellTOSGModel`] and its heads.

    Args:
        num_transcripts: number of transcript (gene) nodes `Nt`; they are entity indices `0..Nt-1`.
        num_proteins: number of protein nodes `Np`; they are entity indices `Nt..Nt+Np-1`.
        hidden_size: node embedding width `d`.
        num_layers: number of message-passing layers over the PPI graph (global stage).
        layer_type: `"gcn"` (Kipf & Welling 2017), `"gat"` (Veličković et al. 2018), `"gatv2"` (Brody et al.
            2022, dynamic attention; PyG's `GATv2Conv`) or
            `"transformer"` (UniMP, Shi et al. 2021).
        num_heads: attention heads for `gat` / `transformer`; `hidden_size` must be divisible by it.
        dropout: dropout on hidden states and attention coefficients.
        name_embedding_dim / description_embedding_dim: widths of the frozen text priors
            (all-MiniLM-L6-v2 → 384).
        sequence_embedding_dim: width of an optional protein-sequence prior; 0 = not used.
        degree_loss_weight: weight of the degree-regression loss in pretraining.
        per_cell_edges: pretraining scores each masked PPI pair in every cell of the batch (from that cell's
            node states) instead of once on cell-averaged node states — so the encoder is trained on
            cell-to-cell variation, not only on the mean cell.
        expression_loss_weight: weight of the masked-expression loss in pretraining (predict the values of
            measured genes hidden from the model, from their transcript states; scGPT-style); > 0 gives
            [`CellTOSGForPreTraining`] its expression head, and the pretraining arguments must then mask
            genes (`PretrainingArguments.gene_mask_ratio > 0`, and 0 otherwise). 0 = no such objective.
        entity_version: hash of the entity table the model expects; empty = accept any graph.
        prior_source: where node identity comes from: `"text"` (the frozen name/description text priors
            and, with `sequence_embedding_dim > 0`, the sequence prior — CellTOSG-FM), `"learned"` (a
            trainable `[N, d]` node embedding instead: the same capacity without any prior knowledge,
            for the "do priors help?" ablation and the GNN baselines) or `"none"` (expression only).
        expression_encoding: `"gene_affine"` (v2): a measured transcript's state is
            `e_g + x · W_v e_g + MLP(x)` with `e_g` the gene's identity vector — no normalisation, so the
            value's magnitude is kept; `"fusion"` (v1): `LayerNorm` over an attention fusion of
            `MLP(x) + x · e_g` with the prior tokens (LayerNorm removes the scale along `e_g`: a gene at
            value 3 and at 6 then give almost the same state).
        trainable_gene_embedding: add a trainable per-node vector (zero-initialised, so it starts at the
            projected priors and weight decay pulls it back toward them) to every node's identity.
        bidirectional_internal: pass messages transcript ↔ protein (and, after the PPI layers, protein →
            transcript, so transcripts see their protein's PPI context); False = transcript → protein only (v1).
        readout: `"gene_wise"` (each node state → `readout_channels` numbers, and the classifier MLP reads
            all nodes' numbers: nothing is averaged away), `"multi_query"` (`num_readout_queries` attention
            poolings over the measured nodes, concatenated) or `"attention"` (one query, v1).
        num_readout_queries: attention queries of the `"multi_query"` / `"attention"` readouts (1 for
            `"attention"`).
        readout_channels: numbers per node of the `"gene_wise"` readout.
        wide_path: add a linear map from the measured expression (`[Nt]`, 0 where unmeasured) to the logits
            (wide & deep, Cheng et al. 2016): the graph part must add to a linear model. The fine-tuning loop
            first fits it as multinomial logistic regression, then trains the graph part on top.
        deep_path: use the graph encoder for classification; False with `wide_path` = the linear model
            alone (ablation).
        wide_weight: factor on the wide path's logits in the sum (1 = wide & deep, 0 = the graph part alone);
            fine-tuning chooses it on validation.
        ppi_scope: `"all"` PPI edges, or `"measured_neighbourhood"`: only edges between proteins whose gene the
            batch measured and their direct PPI neighbours (an edge is dropped when an end lies two or more
            hops from every measured gene's protein, where messages carry no expression, only priors).
            Needs `measured_mask`; without one every gene counts as measured.
    """

    model_type = "celltosg"

    num_transcripts: int = 0
    num_proteins: int = 0
    hidden_size: int = 16
    num_layers: int = 2
    layer_type: str = "gat"
    num_heads: int = 2
    dropout: float | int = 0.0
    name_embedding_dim: int = 384
    description_embedding_dim: int = 384
    sequence_embedding_dim: int = 0
    degree_loss_weight: float = 0.1
    per_cell_edges: bool = False
    expression_loss_weight: float = 0.0
    entity_version: str = ""
    prior_source: str = "text"
    expression_encoding: str = "gene_affine"
    trainable_gene_embedding: bool = True
    bidirectional_internal: bool = True
    readout: str = "gene_wise"
    num_readout_queries: int = 4
    readout_channels: int = 2
    wide_path: bool = True
    deep_path: bool = True
    wide_weight: float = 1.0
    ppi_scope: str = "all"

    @classmethod
    def for_graph(cls, graph, **kwargs) -> "CellTOSGConfig":
        """A config sized for a [`TOSGGraph`]: entity counts, entity-table version and the width of its
        sequence prior (0 when the graph has none); `kwargs` set everything else."""
        seq = getattr(graph, "sequence_embeddings", None)
        return cls(num_transcripts=graph.num_transcripts, num_proteins=graph.num_proteins,
                   entity_version=graph.entity_version,
                   sequence_embedding_dim=0 if seq is None else int(seq.size(-1)), **kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: layer type, head divisibility and sizes."""
        super().validate_architecture()
        if self.layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type={self.layer_type!r} is not supported; accepted values: {list(LAYER_TYPES)}.")
        if self.layer_type != "gcn" and self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}) "
                f"for layer_type={self.layer_type!r}."
            )
        if self.prior_source not in PRIOR_SOURCES:
            raise ValueError(f"prior_source={self.prior_source!r} is not supported; accepted values: "
                             f"{list(PRIOR_SOURCES)}.")
        for name, accepted in (("expression_encoding", EXPRESSION_ENCODINGS), ("readout", READOUTS),
                               ("ppi_scope", PPI_SCOPES)):
            if getattr(self, name) not in accepted:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; accepted values: {list(accepted)}.")
        if self.num_readout_queries < 1 or (self.readout == "attention" and self.num_readout_queries != 1):
            raise ValueError(f"num_readout_queries={self.num_readout_queries} is not accepted: an integer >= 1, "
                             f"and 1 with readout='attention'.")
        if self.expression_loss_weight < 0:
            raise ValueError(f"expression_loss_weight={self.expression_loss_weight} is not accepted: a number >= 0.")
        if self.readout_channels < 1:
            raise ValueError(f"readout_channels={self.readout_channels} is not accepted: an integer >= 1.")
        if not (self.wide_path or self.deep_path):
            raise ValueError("wide_path and deep_path are both False: a classifier needs at least one of them.")
        for name in ("num_transcripts", "num_proteins", "sequence_embedding_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


__all__ = ["CellTOSGConfig", "LAYER_TYPES", "PRIOR_SOURCES", "EXPRESSION_ENCODINGS", "READOUTS", "ARCHITECTURES"]
