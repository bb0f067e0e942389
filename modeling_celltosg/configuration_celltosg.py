"""CellTOSG-FM model configuration.

Every hyper-parameter of CellTOSG-FM (OmniCellTOSG, arXiv 2504.02148 §2.3/§4.4) is a typed, defaulted
field here; the graph topology and the frozen text priors are *data* (see `tosg_graph.TOSGGraph`), so the
configuration only records their sizes and the entity-table version the weights were trained on. How
the model is trained (mask ratio, steps, ...) is not part of it: see `omnicelltosg.train.arguments`.

The defaults are sized for CPU machines (the demo and the evaluation use them); configurations saved
before `mask_ratio` moved to the training arguments still load (the key is kept as an unknown attribute).
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

LAYER_TYPES = ("gcn", "gat", "transformer")
PRIOR_SOURCES = ("text", "learned", "none")


@strict
class CellTOSGConfig(PreTrainedConfig):
    r"""Configuration of [`CellTOSGModel`] and its heads.

    Args:
        num_transcripts: number of transcript (gene) nodes `Nt`; they are entity indices `0..Nt-1`.
        num_proteins: number of protein nodes `Np`; they are entity indices `Nt..Nt+Np-1`.
        hidden_size: node embedding width `d`.
        num_layers: number of message-passing layers over the PPI graph (global stage).
        layer_type: `"gcn"` (Kipf & Welling 2017), `"gat"` (Veličković et al. 2018) or
            `"transformer"` (UniMP, Shi et al. 2021).
        num_heads: attention heads for `gat` / `transformer`; `hidden_size` must be divisible by it.
        dropout: dropout on hidden states and attention coefficients.
        name_embedding_dim / description_embedding_dim: widths of the frozen text priors
            (all-MiniLM-L6-v2 → 384).
        sequence_embedding_dim: width of an optional protein-sequence prior; 0 = not used.
        degree_loss_weight: weight of the degree-regression loss in pretraining.
        entity_version: hash of the entity table the model expects; empty = accept any graph.
        prior_source: where node identity comes from: `"text"` (the frozen name/description text priors
            and, with `sequence_embedding_dim > 0`, the sequence prior — CellTOSG-FM), `"learned"` (a
            trainable `[N, d]` node embedding instead: the same capacity without any prior knowledge,
            for the "do priors help?" ablation and the GNN baselines) or `"none"` (expression only).
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
    entity_version: str = ""
    prior_source: str = "text"

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
        for name in ("num_transcripts", "num_proteins", "sequence_embedding_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


__all__ = ["CellTOSGConfig", "LAYER_TYPES", "PRIOR_SOURCES"]
