"""Masked-expression modelling and per-cell edge scoring of CellTOSGForPreTraining."""

from __future__ import annotations

import pytest
import torch

from modeling_celltosg import CellTOSGForPreTraining
from omnicelltosg.train import PretrainingArguments, pretrain
from tests.test_model import toy_config, toy_graph

POS, NEG = torch.tensor([[3], [4]]), torch.tensor([[3], [5]])


def test_masked_genes_are_hidden_and_their_loss_is_the_mse_on_them():
    torch.manual_seed(0)
    model = CellTOSGForPreTraining(toy_config(expression_loss_weight=1.0)).eval()
    graph = toy_graph()
    x = torch.tensor([[1.0, 2.0, 0.5], [3.0, 0.2, 1.5]])
    masked = torch.tensor([[True, False, False], [False, False, True]])
    with torch.no_grad():
        out = model(x, graph, POS, NEG, masked_genes=masked)
        changed = x.clone()
        changed[masked] += 5.0  # a hidden value must not reach the encoder
        again = model(changed, graph, POS, NEG, masked_genes=masked)
    torch.testing.assert_close(out.expression_predictions, again.expression_predictions)
    expected = ((out.expression_predictions[masked] - x[masked]) ** 2).mean()
    torch.testing.assert_close(out.expression_loss, expected)
    torch.testing.assert_close(out.loss, out.edge_loss + model.config.degree_loss_weight * out.degree_loss
                               + model.config.expression_loss_weight * out.expression_loss)
    # without masking there is no expression loss and the values do reach the encoder
    with torch.no_grad():
        plain, shifted = model(x, graph, POS, NEG), model(changed, graph, POS, NEG)
    assert plain.expression_loss is None and not torch.allclose(plain.node_embeddings, shifted.node_embeddings)


def test_per_cell_edges_score_every_cell():
    torch.manual_seed(0)
    per_cell = CellTOSGForPreTraining(toy_config(per_cell_edges=True)).eval()
    mean = CellTOSGForPreTraining(toy_config(per_cell_edges=False)).eval()
    mean.load_state_dict(per_cell.state_dict())
    graph = toy_graph()
    x = torch.tensor([[1.0, 2.0, 0.5], [3.0, 0.2, 1.5]])
    with torch.no_grad():
        out = per_cell(x, graph, POS, NEG)
        assert out.logits.shape == (2, 2)  # cells × (positive, negative)
        # each row is the decoder on that cell's own states: cell 0 alone gives row 0
        torch.testing.assert_close(out.logits[0], mean(x[:1], graph, POS, NEG).logits)
        torch.testing.assert_close(out.logits[1], mean(x[1:], graph, POS, NEG).logits)


def test_pretrain_with_gene_masking_records_the_expression_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, generator=g) * 3
    model = CellTOSGForPreTraining(toy_config(per_cell_edges=True, expression_loss_weight=1.0))
    res = pretrain(model, x, torch.ones(12, 3, dtype=torch.bool), toy_graph(),
                   PretrainingArguments(steps=6, batch_size=4, gene_mask_ratio=0.5, held_out_fraction=0.0))
    assert len(res["expression_loss_curve"]) == 6 and all(v >= 0 for v in res["expression_loss_curve"])
    assert sum(res["expression_loss_curve"]) > 0
    none = pretrain(CellTOSGForPreTraining(toy_config()), x, torch.ones(12, 3, dtype=torch.bool), toy_graph(),
                    PretrainingArguments(steps=2, batch_size=4, held_out_fraction=0.0))
    assert none["expression_loss_curve"] == []
    # masking without the model's expression head (or the head without masking) is refused up front
    with pytest.raises(ValueError, match="needs both > 0"):
        pretrain(CellTOSGForPreTraining(toy_config()), x, torch.ones(12, 3, dtype=torch.bool), toy_graph(),
                 PretrainingArguments(steps=1, batch_size=4, gene_mask_ratio=0.5, held_out_fraction=0.0))
    assert CellTOSGForPreTraining(toy_config()).expression_head is None
