"""The shared-topology layer of the CellTOSG-FM encoder: one GCN, GAT, GATv2 or Transformer convolution applied
to every cell of a batch over one edge index (`gcn_conv`, `gat_conv`, `gatv2_conv`, `transformer_conv`), with a
residual connection and LayerNorm."""

from __future__ import annotations

from torch import Tensor, nn

from .configuration_celltosg import LAYER_TYPES, CellTOSGConfig
from .gat_conv import SharedGATConv
from .gatv2_conv import SharedGATv2Conv
from .gcn_conv import SharedGCNConv
from .transformer_conv import SharedTransformerConv


def build_shared_conv(layer_type: str, channels: int, heads: int, dropout: float) -> nn.Module:
    """A `channels → channels` shared-topology layer of `layer_type` (`gcn`, `gat`, `gatv2`, `transformer`);
    attention layers use `heads` heads of width `channels // heads`, concatenated."""
    if layer_type == "gcn":
        return SharedGCNConv(channels, channels)
    if layer_type == "gat":
        return SharedGATConv(channels, channels // heads, heads=heads, dropout=dropout)
    if layer_type == "gatv2":
        return SharedGATv2Conv(channels, channels // heads, heads=heads, dropout=dropout)
    if layer_type == "transformer":
        return SharedTransformerConv(channels, channels // heads, heads=heads, dropout=dropout)
    raise ValueError(f"Unknown layer_type {layer_type!r}; accepted values: {list(LAYER_TYPES)}.")


class CellTOSGLayer(nn.Module):
    """One shared-topology convolution with residual connection and LayerNorm:
    `h ← LN(h + dropout(GELU(conv(h, edge_index))))`. Shapes: `[N, B, d]` → `[N, B, d]`."""

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        self.conv = build_shared_conv(config.layer_type, config.hidden_size, config.num_heads, config.dropout)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: Tensor, edge_index: Tensor, output_attentions: bool = False):
        out, attention = self.conv(hidden_states, edge_index, return_attention_weights=True)
        hidden_states = self.norm(hidden_states + self.dropout(nn.functional.gelu(out)))
        return hidden_states, (attention if output_attentions else None)


__all__ = ["build_shared_conv", "CellTOSGLayer"]
