"""Tests of CellTOSG-FM: shared-topology layers vs PyG, message direction, serialisation, training."""

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv, TransformerConv
from transformers import AutoModel, AutoModelForSequenceClassification

from modeling_celltosg import (
    CellTOSGConfig,
    CellTOSGForCellClassification,
    CellTOSGForPreTraining,
    CellTOSGModel,
    SharedGATConv,
    SharedGCNConv,
    SharedTransformerConv,
    TOSGGraph,
    sparse_functions,
)
from modeling_celltosg import topology as topology_module
from modeling_celltosg.configuration_celltosg import ARCHITECTURES
from omnicelltosg.evaluation.link_prediction import (
    sample_negative_edges,
    split_ppi_edges,
)
from omnicelltosg.train import PretrainingArguments, finetune, pretrain

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STRING_PPI = DATA / "knowledge" / "string_human_score900_symbols_mossn.tsv.gz"
LAYER_TYPES = ["gcn", "gat", "transformer"]


def toy_graph(version="v1", dim=384, seed=0):
    """3 transcripts, 3 proteins: t0 → p3, t1 → p4; PPI p3–p4; t2 and p5 are isolated."""
    g = torch.Generator().manual_seed(seed)
    return TOSGGraph(
        num_transcripts=3,
        num_proteins=3,
        internal_edge_index=torch.tensor([[0, 1], [3, 4]]),
        ppi_edge_index=torch.tensor([[3], [4]]),
        name_embeddings=torch.randn(6, dim, generator=g),
        description_embeddings=torch.randn(6, dim, generator=g),
        entity_version=version,
    )


def toy_config(layer_type="gat", **kw):
    return CellTOSGConfig(num_transcripts=3, num_proteins=3, layer_type=layer_type, entity_version="v1", **kw)


# ---------------------------------------------------------------------------------------------------------
# Shared-topology layers = PyG layers applied per cell
# ---------------------------------------------------------------------------------------------------------


def _copy_weights(shared, pyg):
    with torch.no_grad():
        if isinstance(shared, SharedGCNConv):
            pyg.lin.weight.copy_(shared.lin.weight)
            shared.bias.normal_()
            pyg.bias.copy_(shared.bias)
        elif isinstance(shared, SharedGATConv):
            pyg.lin.weight.copy_(shared.lin.weight)
            pyg.att_src.copy_(shared.att_src)
            pyg.att_dst.copy_(shared.att_dst)
            shared.bias.normal_()
            pyg.bias.copy_(shared.bias)
        else:
            for name in ("lin_key", "lin_query", "lin_value", "lin_skip"):
                getattr(pyg, name).load_state_dict(getattr(shared, name).state_dict())


@pytest.mark.parametrize(
    "make",
    [
        lambda: (SharedGCNConv(5, 4), GCNConv(5, 4)),
        lambda: (SharedGATConv(5, 4, heads=2), GATConv(5, 4, heads=2)),
        lambda: (SharedTransformerConv(5, 4, heads=2), TransformerConv(5, 4, heads=2)),
    ],
    ids=LAYER_TYPES,
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused-cpu-kernels", "torch-path"])
def test_shared_layers_match_pyg_per_cell(make, fused):
    """Both attention paths: the fused numba kernels (CPU default) and the channel-major torch path
    (what CUDA inputs take; forced here on CPU)."""
    torch.manual_seed(0)
    shared, pyg = make()
    shared.cpu_kernels = fused
    _copy_weights(shared, pyg)
    # 7 nodes with a pre-existing self-loop (2→2), a node without incoming edges (node 0 only sends) and
    # a duplicated edge (3→4 twice: two messages, as in PyG).
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 2, 6, 3], [1, 2, 3, 4, 5, 6, 2, 1, 4]])
    x = torch.randn(7, 3, 5, requires_grad=True)  # [N, B, F]

    out, (att_index, alpha) = shared(x, edge_index, return_attention_weights=True)
    if isinstance(shared, SharedGCNConv):  # GCNConv has no attention; ours returns its norm coefficients
        expected = torch.stack([pyg(x[:, c], edge_index) for c in range(x.size(1))], dim=1)
        assert alpha.shape == (att_index.size(1), 3, 1)
    else:
        refs = [pyg(x[:, c], edge_index, return_attention_weights=True) for c in range(x.size(1))]
        expected = torch.stack([r[0] for r in refs], dim=1)
        torch.testing.assert_close(att_index, refs[0][1][0])
        torch.testing.assert_close(alpha, torch.stack([r[1][1] for r in refs], dim=1), rtol=1e-5, atol=1e-6)

    weight = torch.randn_like(out)
    names = [name for name, _ in shared.named_parameters()]  # our parameter names are PyG's
    pyg_params = dict(pyg.named_parameters())
    grads = torch.autograd.grad((out * weight).sum(), [x, *shared.parameters()])
    grads_ref = torch.autograd.grad((expected * weight).sum(), [x, *(pyg_params[n] for n in names)])
    for name, grad, grad_ref in zip(["x", *names], grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref.view_as(grad), rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("fused", [True, False], ids=["fused-cpu-kernels", "torch-path"])
def test_shared_layers_match_pyg_on_a_dense_graph(layer_type, fused):
    """10,000 edges on 150 nodes (about 67 incoming edges per node): both attention paths must still
    equal PyG per cell, forward and gradients, and the cached operator must follow in-place edits of the
    edge tensor (version counter) instead of serving the old topology."""
    torch.manual_seed(1)
    n = 150
    pairs = torch.randperm(n * n)[:10_000]
    edge_index = torch.stack([pairs // n, pairs % n])
    shared, pyg = {
        "gcn": lambda: (SharedGCNConv(6, 4), GCNConv(6, 4)),
        "gat": lambda: (SharedGATConv(6, 4, heads=2), GATConv(6, 4, heads=2)),
        "transformer": lambda: (SharedTransformerConv(6, 4, heads=2), TransformerConv(6, 4, heads=2)),
    }[layer_type]()
    shared.cpu_kernels = fused
    _copy_weights(shared, pyg)
    x = torch.randn(n, 2, 6, requires_grad=True)

    def check():
        out = shared(x, edge_index)
        expected = torch.stack([pyg(x[:, c], edge_index) for c in range(x.size(1))], dim=1)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        weight = torch.randn_like(out)
        grad = torch.autograd.grad((out * weight).sum(), x)[0]
        grad_ref = torch.autograd.grad((expected * weight).sum(), x)[0]
        torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-5)
        return out

    before = check()
    edge_index[1] = edge_index[1].roll(1)  # in place: same tensor object, new topology
    after = check()
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------------------------------------------------
# Message direction: transcript → protein
# ---------------------------------------------------------------------------------------------------------


def _dropout_reference(kind, inputs, keep, edge_index, n, scale_or_slope):
    """Independent float64 computation of the fused attention with a fixed dropout mask: PyG's `softmax`
    over edges, then `Σ α · keep · value` with `index_add_` (per channel, in the original edge order)."""
    from torch_geometric.utils import softmax

    src, dst = edge_index
    if kind == "gat":
        h, att_src, att_dst = inputs  # channel k = cell · H + head uses att_*[k mod H]
        cells = h.size(1) // att_src.size(0)
        a_src, a_dst = ((h * att.repeat(cells, 1)).sum(-1) for att in (att_src, att_dst))
        scores = torch.nn.functional.leaky_relu(a_src[src] + a_dst[dst], scale_or_slope)
        value = h
    else:
        query, key, value = inputs
        scores = (query[dst] * key[src]).sum(-1) * scale_or_slope
    alpha = softmax(scores, dst, num_nodes=n)
    return torch.zeros_like(value).index_add_(0, dst, (alpha * keep).unsqueeze(-1) * value[src])


@pytest.mark.parametrize("kind", ["gat", "transformer"])
def test_fused_attention_kernels_with_dropout_mask_match_reference_and_gradcheck(kind):
    """The fused CPU kernels with a dropout mask: forward equals an independent computation, and the
    hand-written backward passes `torch.autograd.gradcheck` (float64 finite differences) for every input."""
    g = torch.Generator().manual_seed(3)
    n, cells, heads, c = 6, 2, 2, 3
    k = cells * heads
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 2, 0, 3, 5], [1, 2, 3, 4, 5, 0, 2, 3, 4, 1]])
    topology = topology_module.CSRTopology.from_edge_index(edge_index, n)
    keep_original = (torch.rand(edge_index.size(1), k, generator=g, dtype=torch.float64) > 0.3).double() / 0.7
    keep = keep_original[topology.inverse_order.long().argsort()]  # original edge order → target-major order
    assert torch.equal(keep.index_select(0, topology.inverse_order), keep_original)
    if kind == "gat":
        inputs = (torch.randn(n, k, c, generator=g, dtype=torch.float64),
                  torch.randn(heads, c, generator=g, dtype=torch.float64),
                  torch.randn(heads, c, generator=g, dtype=torch.float64))
        fn, extra = sparse_functions.FusedGATAttention, 0.2
    else:
        inputs = tuple(torch.randn(n, k, c, generator=g, dtype=torch.float64) for _ in range(3))
        fn, extra = sparse_functions.FusedDotAttention, 1 / math.sqrt(c)
    inputs = tuple(t.requires_grad_() for t in inputs)

    out, alpha = fn.apply(*inputs, keep, topology, extra, cells)
    expected = _dropout_reference(kind, inputs, keep_original, edge_index, n, extra)
    torch.testing.assert_close(out.view(n, k, c), expected)
    assert torch.count_nonzero(keep_original == 0) > 0  # the mask really drops something
    assert torch.autograd.gradcheck(lambda *xs: fn.apply(*xs, keep, topology, extra, cells)[0], inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_csr_matmul_kernel_matches_scipy(dtype, index_dtype):
    """GCN's CPU sparse product (numba, written in place) equals scipy's CSR product, including rows
    without entries, a duplicated entry and a non-contiguous input (the transpose of a tensor)."""
    from scipy import sparse

    from modeling_celltosg.cpu_kernels import csr_matmul

    g = torch.Generator().manual_seed(5)
    rows = torch.tensor([0, 0, 2, 2, 2, 4, 4])  # rows 1 and 3 are empty; (4, 1) appears twice
    cols = torch.tensor([1, 3, 0, 2, 4, 1, 1])
    values = torch.randn(rows.numel(), generator=g, dtype=dtype)
    crow, col, order = topology_module.csr_by(rows, cols, 5)
    dense = torch.randn(6, 5, generator=g, dtype=dtype).t()  # [5, 6], not contiguous
    expected = sparse.csr_matrix((values.numpy(), (rows.numpy(), cols.numpy())), shape=(5, 5)) @ dense.numpy()
    out = sparse_functions._spmm(crow.to(index_dtype), col.to(index_dtype), values[order], dense)
    assert out.dtype == dtype and out.shape == dense.shape and out.is_contiguous()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert torch.all(out[[1, 3]] == 0)
    raw = torch.full((5, 6), float("nan"), dtype=dtype)  # the kernel must overwrite, not accumulate into, out
    csr_matmul(crow.numpy(), col.numpy(), values[order].numpy(), dense.contiguous().numpy(), raw.numpy())
    torch.testing.assert_close(raw, out)


def test_kernel_row_parts_cover_all_rows_with_balanced_cost():
    """The kernels' parallel row split: consecutive parts from row 0 to R, none costing more than an equal
    share plus one row, on a skewed degree sequence like the TOSG's (light rows first, hubs last)."""
    from modeling_celltosg.cpu_kernels import _ROW_PARTS, _balanced_row_parts

    rng = np.random.default_rng(0)
    degrees = np.concatenate([np.zeros(5000, dtype=np.int64), rng.zipf(1.8, 3000).clip(max=2000)])
    crow = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int32)
    parts = _balanced_row_parts(crow)
    assert parts[0] == 0 and parts[-1] == degrees.size and parts.size == _ROW_PARTS + 1
    assert np.all(np.diff(parts) >= 0)
    cost = degrees + 1
    per_part = np.add.reduceat(np.append(cost, 0), parts[:-1])[:_ROW_PARTS] * (np.diff(parts) > 0)
    assert per_part.sum() == cost.sum()
    assert per_part.max() <= cost.sum() / _ROW_PARTS + cost.max()
    halves = [cost[: parts[_ROW_PARTS // 2]].sum(), cost[parts[_ROW_PARTS // 2]:].sum()]
    assert max(halves) / cost.sum() < 0.6  # while an equal split of row indices is far off:
    assert cost[: degrees.size // 2].sum() / cost.sum() < 0.4


@pytest.mark.parametrize("architecture", ["v1", "v2"])
@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_messages_flow_from_transcript_to_protein(layer_type, architecture):
    torch.manual_seed(0)
    model = CellTOSGModel(toy_config(layer_type, **ARCHITECTURES[architecture])).eval()
    graph = toy_graph()
    x = torch.rand(2, 3)
    x_changed = x.clone()
    x_changed[:, 0] += 3.0  # change transcript t0 only
    with torch.no_grad():
        before = model(x, graph).last_hidden_state
        after = model(x_changed, graph).last_hidden_state
    moved = (after - before).abs().amax(dim=(0, 2))  # per node
    assert moved[3] > 1e-4, "protein p3 must receive from its transcript t0"
    assert moved[4] > 1e-4, "p4 is a PPI neighbour of p3 and must see the change"
    assert moved[5] == 0 and moved[2] == 0, "p5 and t2 have no path from t0 and must be unaffected"
    if architecture == "v1":  # transcript → protein only: no transcript ever receives a message
        assert moved[1] == 0, "v1: other transcripts must not receive from t0"
    else:  # protein → transcript feedback: t1 sees t0 through p3–p4
        assert moved[1] > 1e-4, "v2: t1 must see t0's change through its protein's PPI partner"


def test_unmeasured_uses_learned_embedding_not_zero():
    torch.manual_seed(0)
    model = CellTOSGModel(toy_config()).eval()
    graph = toy_graph()
    x = torch.zeros(1, 3)
    mask = torch.tensor([[False, True, True]])
    with torch.no_grad():
        measured_zero = model(x, graph).last_hidden_state
        unmeasured = model(x, graph, measured_mask=mask).last_hidden_state
        unmeasured_other_value = model(x + 5.0 * ~mask, graph, measured_mask=mask).last_hidden_state
    assert (measured_zero[0, 0] - unmeasured[0, 0]).abs().max() > 1e-4
    torch.testing.assert_close(unmeasured, unmeasured_other_value)  # value ignored where unmeasured


def test_entities_without_sequence_use_the_learned_missing_vector():
    from dataclasses import replace

    torch.manual_seed(0)
    graph = toy_graph()
    seq = torch.randn(6, 8)
    present = torch.tensor([False, False, False, True, True, False])  # p5 (index 5) has no sequence
    graph = replace(graph, sequence_embeddings=seq, sequence_present=present)
    config = CellTOSGConfig.for_graph(graph, layer_type="gcn")
    assert config.sequence_embedding_dim == 8 and config.entity_version == "v1"
    model = CellTOSGModel(config).eval()
    x = torch.rand(1, 3)
    with torch.no_grad():
        base = model(x, graph).last_hidden_state
        junk = seq.clone()
        junk[5] = 100.0  # the placeholder row of an entity without a sequence is never read
        same = model(x, replace(graph, sequence_embeddings=junk)).last_hidden_state
        real = seq.clone()
        real[3] += 1.0  # a real sequence embedding is used
        moved = model(x, replace(graph, sequence_embeddings=real)).last_hidden_state
        zero_proj = model.embeddings.sequence_projection(torch.zeros(1, 8))
    torch.testing.assert_close(base, same)
    assert (moved - base).abs().max() > 1e-4
    assert (model.embeddings.missing_sequence - zero_proj).abs().max() > 1e-4  # not a zero embedding
    # a model without a sequence prior runs on the same graph (ignores it)
    plain = CellTOSGModel(toy_config(layer_type="gcn")).eval()
    assert plain(x, graph).last_hidden_state.shape == base.shape


# ---------------------------------------------------------------------------------------------------------
# Graph / version checks and configuration
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior_source", ["learned", "none"])
def test_prior_source_ablation_ignores_text_priors(prior_source):
    """Without text priors the model must not read the graph's text embeddings at all (the ablation
    would otherwise leak them), while the text model must depend on them."""
    torch.manual_seed(0)
    graph = toy_graph()
    other = toy_graph(seed=1)  # same topology, different text embeddings
    x = torch.rand(2, 3)
    ablated = CellTOSGModel(toy_config(prior_source=prior_source)).eval()
    text = CellTOSGModel(toy_config(prior_source="text")).eval()
    assert ablated.embeddings.name_projection is None
    assert (ablated.embeddings.node_embedding is not None) == (prior_source == "learned")
    with torch.no_grad():
        torch.testing.assert_close(ablated(x, graph).last_hidden_state, ablated(x, other).last_hidden_state)
        assert not torch.allclose(text(x, graph).last_hidden_state, text(x, other).last_hidden_state)
    with pytest.raises(Exception, match="text.*learned.*none"):  # huggingface_hub wraps the ValueError
        toy_config(prior_source="minilm")


def test_entity_version_mismatch_names_both_versions():
    model = CellTOSGModel(toy_config())
    with pytest.raises(ValueError) as info:
        model(torch.rand(2, 3), toy_graph(version="other-hash"))
    assert "other-hash" in str(info.value) and "v1" in str(info.value)


def test_entity_count_mismatch_is_refused():
    model = CellTOSGModel(CellTOSGConfig(num_transcripts=4, num_proteins=3))
    with pytest.raises(ValueError, match="expects 4 and 3"):
        model(torch.rand(2, 3), toy_graph())


def test_non_finite_expression_is_refused_not_propagated():
    model = CellTOSGModel(toy_config()).eval()
    x = torch.rand(4, 3)
    assert torch.isfinite(model(x, toy_graph()).last_hidden_state).all()
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[2, 1] = bad
        with pytest.raises(ValueError, match=r"1 NaN/Inf value\(s\) in 1 cell\(s\) \(rows \[2\]\)"):
            model(y, toy_graph())
    clf = CellTOSGForCellClassification(toy_config(num_labels=2))
    y = x.clone()
    y[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        clf(y, toy_graph())


def test_ppi_scope_keeps_measured_genes_proteins_and_their_neighbours():
    from modeling_celltosg.modeling_celltosg import measured_neighbourhood_edges

    # 4 transcripts t0..t3 → proteins p4..p7; PPI path p4–p5–p6–p7
    internal = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    ppi = torch.tensor([[4, 5, 6], [5, 6, 7]])
    kept = measured_neighbourhood_edges(ppi, internal, torch.tensor([True, False, False, False]), 4, 4)
    assert kept.tolist() == [[4], [5]]  # p4 measured, p5 its neighbour; p6, p7 are 2 and 3 hops away
    kept = measured_neighbourhood_edges(ppi, internal, torch.tensor([False, True, False, False]), 4, 4)
    assert kept.tolist() == [[4, 5], [5, 6]]  # p5 measured: p4 and p6 kept, p6–p7 dropped
    same = measured_neighbourhood_edges(ppi, internal, torch.tensor([False, True, False, False]), 4, 4)
    assert same is kept  # memoised per topology and measured set
    assert measured_neighbourhood_edges(ppi, internal, torch.ones(4, dtype=torch.bool), 4, 4).tolist() == ppi.tolist()
    # the model with ppi_scope = measured_neighbourhood equals the model given those edges explicitly
    g = toy_graph()
    model = CellTOSGModel(toy_config(ppi_scope="measured_neighbourhood")).eval()
    x, mask = torch.rand(2, 3), torch.tensor([[False, False, True], [False, False, True]])
    kept = measured_neighbourhood_edges(g.ppi_edge_index, g.internal_edge_index, mask.any(0), 3, 3)
    assert kept.shape == (2, 0)  # t2's protein p5 is isolated: no edge near a measured gene
    scoped = model(x, g, measured_mask=mask).last_hidden_state
    torch.testing.assert_close(scoped, model(x, g, measured_mask=mask, ppi_edge_index=kept).last_hidden_state)
    full = CellTOSGModel(toy_config()).eval()
    full.load_state_dict(model.state_dict())
    assert not torch.allclose(scoped, full(x, g, measured_mask=mask).last_hidden_state)  # p3–p4 dropped
    with pytest.raises(Exception, match="ppi_scope"):
        toy_config(ppi_scope="everything")


def test_unknown_layer_type_lists_accepted_values():
    with pytest.raises(Exception, match="gcn.*gat.*transformer"):
        CellTOSGConfig(layer_type="sage")


# ---------------------------------------------------------------------------------------------------------
# Serialisation: from_pretrained, Auto classes, trust_remote_code
# ---------------------------------------------------------------------------------------------------------


def test_config_saved_with_the_former_mask_ratio_still_loads(tmp_path):
    """`mask_ratio` moved from the model config to `PretrainingArguments`; older config.json files keep it."""
    toy_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "mask_ratio" not in saved
    (tmp_path / "config.json").write_text(json.dumps({**saved, "mask_ratio": 0.3}))
    loaded = CellTOSGConfig.from_pretrained(tmp_path)
    assert loaded.mask_ratio == 0.3 and loaded.num_transcripts == 3 and loaded.layer_type == "gat"
    CellTOSGForPreTraining(loaded)  # the model builds from it


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_save_and_auto_model_load_give_identical_outputs(tmp_path, layer_type):
    torch.manual_seed(0)
    model = CellTOSGModel(toy_config(layer_type)).eval()
    graph, x = toy_graph(), torch.rand(4, 3)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CellTOSGModel
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, graph).last_hidden_state, model(x, graph).last_hidden_state, rtol=0, atol=0)
    saved = {p.name for p in tmp_path.iterdir()}
    assert {"configuration_celltosg.py", "modeling_celltosg.py", "tosg_graph.py", "gat_conv.py", "model.safetensors"} <= saved


REMOTE_SCRIPT = """
import importlib, sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert 'modeling_celltosg' not in sys.modules, 'the local package must not be imported'
graph_module = importlib.import_module(type(model).__module__.rsplit('.', 1)[0] + '.tosg_graph')
inputs = torch.load(sys.argv[2])
graph = graph_module.TOSGGraph(**inputs['graph'])
with torch.no_grad():
    out = model(inputs['x'], graph).last_hidden_state
torch.save({'out': out, 'cls': type(model).__module__ + '.' + type(model).__name__}, sys.argv[3])
"""


def test_trust_remote_code_loads_in_fresh_process_without_package(tmp_path):
    torch.manual_seed(0)
    model = CellTOSGForPreTraining(toy_config("gat")).eval()
    graph, x = toy_graph(), torch.rand(4, 3)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    auto_map = json.loads((ckpt / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_celltosg.CellTOSGModel"
    fields = ("num_transcripts", "num_proteins", "internal_edge_index", "ppi_edge_index", "name_embeddings",
              "description_embeddings", "entity_version")
    torch.save({"x": x, "graph": {f: getattr(graph, f) for f in fields}}, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(ckpt), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    assert remote["cls"].startswith("transformers_modules") and remote["cls"].endswith("CellTOSGModel")
    with torch.no_grad():
        expected = model.celltosg(x, graph).last_hidden_state
    # float32 tolerance, not bitwise: the fresh process may get another intra-op thread count, and a
    # multi-threaded scatter (index_add_) then sums in another order (seen: 1.2e-6 under CPU load)
    torch.testing.assert_close(remote["out"], expected, rtol=1e-4, atol=1e-5)


def test_classifier_from_pretraining_checkpoint_reuses_encoder(tmp_path):
    torch.manual_seed(0)
    pretrained = CellTOSGForPreTraining(toy_config())
    pretrained.save_pretrained(tmp_path)
    labels = ["B cell", "T cell", "NK cell"]
    clf = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    assert type(clf) is CellTOSGForCellClassification and clf.config.id2label[1] == "T cell"
    for name, tensor in pretrained.celltosg.state_dict().items():
        torch.testing.assert_close(clf.celltosg.state_dict()[name], tensor, rtol=0, atol=0)
    out = clf(torch.rand(2, 3), toy_graph(), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.pooling_weights.shape == (2, 6)
    assert clf.config.readout == "gene_wise" and (out.pooling_weights >= 0).all()  # per-node norms
    assert torch.isfinite(out.loss)
    # an attention readout's weights are a distribution over the nodes
    pooled = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3, readout="multi_query")
    weights = pooled(torch.rand(2, 3), toy_graph()).pooling_weights
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def test_split_and_negative_sampling():
    pairs = torch.stack([torch.arange(10, 40), torch.arange(11, 41)])
    train, test = split_ppi_edges(pairs, held_out_fraction=0.2, seed=1)
    assert train.size(1) == 24 and test.size(1) == 6
    as_set = lambda e: {tuple(p) for p in e.t().tolist()}  # noqa: E731
    assert not as_set(train) & as_set(test) and as_set(train) | as_set(test) == as_set(pairs)
    neg = sample_negative_edges(200, (10, 41), pairs.flip(0), torch.Generator().manual_seed(0))
    assert neg.shape == (2, 200) and (neg[0] != neg[1]).all() and (neg >= 10).all() and (neg < 41).all()
    assert not {tuple(sorted(p)) for p in neg.t().tolist()} & as_set(pairs)


def test_training_arguments_name_unknown_fields_and_round_trip_the_command_line():
    import argparse

    from omnicelltosg.train.arguments import add_arguments, from_namespace

    with pytest.raises(TypeError, match=r"\['lr'\].*learning_rate"):
        PretrainingArguments().with_overrides(lr=1e-3)
    with pytest.raises(ValueError, match="negatives='hard'.*degree_matched"):
        PretrainingArguments(negatives="hard")
    parser = argparse.ArgumentParser()
    add_arguments(parser, PretrainingArguments)
    assert from_namespace(PretrainingArguments, parser.parse_args([])) == PretrainingArguments()
    parsed = from_namespace(PretrainingArguments, parser.parse_args(["--learning-rate", "0.01", "--negatives", "random"]))
    assert parsed == PretrainingArguments(learning_rate=0.01, negatives="random")


def test_a_step_dealt_out_over_processes_covers_the_single_process_draw():
    """`MaskedEdgeTask.draw_batch`: the ranks of a world share one edge mask and split its cells."""
    from dataclasses import replace

    from omnicelltosg.train.pretraining import MaskedEdgeTask

    graph = replace(toy_graph(), ppi_edge_index=torch.tensor([[3, 3], [4, 5]]))  # negatives: only 4–5
    task = MaskedEdgeTask.build(graph, PretrainingArguments(mask_ratio=0.4, held_out_fraction=0.0,
                                                            negatives="random"), "cpu")
    assert task.num_masked == 1 and task.test_edges.size(1) == 0
    whole = task.draw_batch(10, 4, torch.Generator().manual_seed(5))
    parts = [task.draw_batch(10, 2, torch.Generator().manual_seed(5), rank, 2) for rank in range(2)]
    assert sorted(torch.cat([p.cells for p in parts]).tolist()) == sorted(whole.cells.tolist())
    for part in parts:
        assert torch.equal(part.positives, whole.positives) and torch.equal(part.visible, whole.visible)
        assert torch.equal(part.negatives, whole.negatives)


def real_string_graph(rows=300):
    """Small real PPI graph: the first `rows` STRING (score ≥ 900) pairs; one transcript per protein."""
    pd = pytest.importorskip("pandas")
    if not STRING_PPI.exists():
        pytest.skip(f"real data not available: {STRING_PPI} is missing")
    with gzip.open(STRING_PPI, "rt") as handle:
        table = pd.read_csv(handle, sep="\t", nrows=rows)
    genes = sorted(set(table["gene_a"]) | set(table["gene_b"]))
    index = {g: i for i, g in enumerate(genes)}
    n = len(genes)
    pairs = torch.tensor([[index[a] for a in table["gene_a"]], [index[b] for b in table["gene_b"]]]) + n
    pairs = torch.unique(torch.sort(pairs, dim=0).values, dim=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    g = torch.Generator().manual_seed(0)
    # Text priors are random here: this test exercises optimisation, not the prior embeddings.
    return TOSGGraph(
        num_transcripts=n,
        num_proteins=n,
        internal_edge_index=torch.stack([torch.arange(n), torch.arange(n) + n]),
        ppi_edge_index=pairs,
        name_embeddings=torch.randn(2 * n, 384, generator=g),
        description_embeddings=torch.randn(2 * n, 384, generator=g),
        entity_version="string-first-300",
    )


def test_pretraining_lowers_loss_on_real_ppi():
    graph = real_string_graph()
    torch.manual_seed(0)
    config = CellTOSGConfig(
        num_transcripts=graph.num_transcripts, num_proteins=graph.num_proteins, hidden_size=16,
        entity_version=graph.entity_version,
    )
    model = CellTOSGForPreTraining(config)
    # Random expression: input noise only, the edges to reconstruct are the real STRING pairs.
    expression = torch.log1p(torch.rand(32, graph.num_transcripts) * 5)
    measured = torch.rand(32, graph.num_transcripts) > 0.1
    args = PretrainingArguments(steps=40, batch_size=8, learning_rate=5e-3, mask_ratio=0.2, held_out_fraction=0.1,
                                seed=0)
    result = pretrain(model, expression, measured, graph, args, log_every=10)
    curve = result["loss_curve"]
    assert len(curve) == 40
    assert np.mean(curve[-8:]) < np.mean(curve[:8])
    assert result["n_train_edges"] + result["n_test_edges"] == graph.ppi_edge_index.size(1)
    assert result["n_cells"] == 32 and 0.0 <= result["auroc"] <= 1.0 and 0.0 <= result["ap"] <= 1.0


def test_finetuning_lowers_loss_and_selects_on_validation():
    torch.manual_seed(0)
    graph = toy_graph()
    model = CellTOSGForCellClassification(toy_config(num_labels=2))
    expression = torch.rand(96, 3) * 3
    labels = (expression[:, 0] > expression[:, 1]).long()  # learnable toy labelling
    measured = torch.ones(96, 3, dtype=torch.bool)
    result = finetune(model, expression, measured, labels, graph, train_idx=range(64), val_idx=range(64, 80),
                      test_idx=range(80, 96), epochs=8, batch_size=16, learning_rate=1e-2, seed=0)
    assert result["train_loss_curve"][-1] < result["train_loss_curve"][0]
    assert result["best_epoch"] == int(np.argmax(result["val_macro_f1_curve"]))
    assert result["test_predictions"].shape == (16,) and 0.0 <= result["accuracy"] <= 1.0


def test_finetune_handles_a_lone_last_training_cell():
    """17 training cells with batch size 16: the 17th must not form a 1-cell batch (BatchNorm fails on it)."""
    torch.manual_seed(0)
    graph = toy_graph()
    model = CellTOSGForCellClassification(toy_config(num_labels=2, hidden_size=8))
    x, y = torch.rand(23, 3), torch.arange(23) % 2
    res = finetune(model, x, torch.ones(23, 3, dtype=torch.bool), y, graph, train_idx=range(17),
                   val_idx=range(17, 20), test_idx=range(20, 23), epochs=1, batch_size=16)
    assert len(res["train_loss_curve"]) == 1 and res["test_probabilities"].shape == (3, 2)


def test_finetune_refuses_overlapping_splits():
    model = CellTOSGForCellClassification(toy_config(num_labels=2))
    x = torch.rand(10, 3)
    with pytest.raises(ValueError, match="overlap"):
        finetune(model, x, torch.ones(10, 3, dtype=torch.bool), torch.zeros(10, dtype=torch.long), toy_graph(),
                 train_idx=range(6), val_idx=range(5, 8), test_idx=range(8, 10), epochs=1)
