"""The shared-topology GATv2 layer equals PyG's GATv2Conv applied to each cell on its own."""

from __future__ import annotations

import torch
from torch_geometric.nn import GATv2Conv

from modeling_celltosg import SharedGATv2Conv


def test_shared_gatv2_equals_pyg_per_cell():
    torch.manual_seed(0)
    n, b, f = 7, 3, 8
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 6, 2]])  # includes a self-loop
    layer = SharedGATv2Conv(f, 4, heads=2).eval()
    x = torch.randn(n, b, f)
    out, (index, alpha) = layer(x, edge_index, return_attention_weights=True)
    assert out.shape == (n, b, 8) and alpha.shape == (index.size(1), b, 2)
    reference = GATv2Conv(f, 4, heads=2, add_self_loops=True).eval()
    reference.load_state_dict(layer.conv.state_dict())
    for cell in range(b):
        ref_out, (ref_index, ref_alpha) = reference(x[:, cell], edge_index, return_attention_weights=True)
        torch.testing.assert_close(out[:, cell], ref_out, atol=1e-5, rtol=1e-5)
        assert torch.equal(index, ref_index)
        torch.testing.assert_close(alpha[:, cell], ref_alpha, atol=1e-6, rtol=1e-5)
    # attention sums to one over each target's incoming edges (self-loop included), per cell and head
    sums = torch.zeros(n, b, 2).index_add_(0, index[1], alpha)
    torch.testing.assert_close(sums, torch.ones(n, b, 2))
