"""The per-entity prior cache (dataset_script.build.prior_cache) on real entity texts and sequences.

Entities: the entity graph of the first 40 genes (by Entrez ID) of the real gene ↔ Swiss-Prot table —
transcripts and proteins with their real names, GO descriptions and Swiss-Prot sequences. Encoder
work is counted by wrapping the real encoder object's method (``TextEncoder.encode``,
``UniRep.embed``) with a counter that records what it was asked to embed; nothing is mocked.
"""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_script.build import prior_cache as pc
from dataset_script.build.prior_cache import (
    PriorCache,
    cached_sequence_embeddings,
    cached_text_embeddings,
    default_cache_dir,
    entry_key,
    prior_cache_dir,
    text_encoder_identity,
    text_identity_of,
    unirep_identity,
)
from dataset_script.build.prior_seed import seed_from_dataset

N_GENES = 40
UNIREP64 = "unirep_uniref50_64units_jax-unirep3.0.0.npz"
UNIREP256 = "unirep_uniref50_256units_jax-unirep3.0.0.npz"
TOL = 1e-6


def _count(obj, method: str) -> list[list[str]]:
    """Wrap ``obj.method`` (the real bound method) so every call's input list is recorded."""
    calls: list[list[str]] = []
    real = getattr(obj, method)

    def counted(items, *args, **kwargs):
        calls.append(list(items))
        return real(items, *args, **kwargs)

    setattr(obj, method, counted)
    return calls


def _n(calls: list[list[str]]) -> int:
    return sum(len(c) for c in calls)


@pytest.fixture(scope="module")
def entities(data_dir) -> pd.DataFrame:
    from dataset_script.build.knowledge import build_entity_graph, read_table

    g2p = read_table(data_dir / "knowledge" / "gene2protein_swissprot_human.tsv.gz")
    universe = sorted(set(g2p["entrez_id"]), key=int)[:N_GENES]
    graph = build_entity_graph(data_dir / "knowledge", entrez_ids=universe, ppi="string", min_ppi_score=0.9)
    return graph.entities


@pytest.fixture(scope="module")
def texts(entities) -> list[str]:
    return entities["name"].tolist() + entities["description"].tolist()


@pytest.fixture(scope="module")
def sequences(entities) -> list[str]:
    return entities["sequence"].fillna("").tolist()


@pytest.fixture(scope="module")
def encoder():
    from dataset_script.build.text_encoder import TextEncoder

    enc = TextEncoder(max_length=pc.TEXT_MAX_LENGTH)
    enc.calls = _count(enc, "encode")
    return enc


@pytest.fixture(scope="module")
def unirep(data_dir):
    from dataset_script.build.unirep import UniRep

    net = UniRep.from_npz(data_dir / "models" / UNIREP64)
    net.calls = _count(net, "embed")
    return net


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory, texts, encoder) -> dict:
    """Cold call on 80% of the texts (every fifth left out), warm repeat, then an incremental call on
    all of them, in one fresh cache; and the fresh (uncached) encoding of all texts for reference."""
    cache = PriorCache(tmp_path_factory.mktemp("text-cache"))
    kept = [i for i in range(len(texts)) if i % 5]
    first = [texts[i] for i in kept]
    out = {"cache": cache, "first": first, "kept": kept}
    for run, items in (("cold", first), ("warm", first), ("incremental", texts)):
        encoder.calls.clear()
        out[run] = cached_text_embeddings(items, cache, encoder=encoder, progress=False)
        out[f"{run}_asked"] = [t for call in encoder.calls for t in call]
    encoder.calls.clear()
    out["fresh"] = encoder.encode(texts, progress=False)
    return out


def test_text_warm_call_embeds_nothing_and_incremental_only_new(text_runs, texts):
    first = text_runs["first"]
    assert sorted(text_runs["cold_asked"]) == sorted({t for t in first if t})  # each distinct string once
    assert text_runs["warm_asked"] == []
    new = {t for t in texts if t} - set(first)
    assert len(new) > 10
    assert sorted(text_runs["incremental_asked"]) == sorted(new)
    np.testing.assert_array_equal(text_runs["warm"], text_runs["cold"])  # stored float32, read back exactly
    np.testing.assert_array_equal(text_runs["incremental"][text_runs["kept"]], text_runs["cold"])


def test_text_cached_equals_fresh(text_runs, texts):
    got, fresh = text_runs["incremental"], text_runs["fresh"]
    assert got.shape == fresh.shape == (len(texts), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, fresh, rtol=0, atol=TOL)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_sequences_warm_incremental_and_fresh(tmp_path, sequences, unirep, data_dir):
    weights = data_dir / "models" / UNIREP64
    cache = PriorCache(tmp_path)
    present_all = [s for s in sequences if s]
    half = sequences[::2]  # transcripts (no sequence) and proteins alternate-picked: a subset of both
    unirep.calls.clear()
    cold, present = cached_sequence_embeddings(half, weights, cache, model=unirep, progress=False)
    assert sorted(t for c in unirep.calls for t in c) == sorted({s for s in half if s})
    unirep.calls.clear()
    warm, _ = cached_sequence_embeddings(half, weights, cache, model=unirep, progress=False)
    assert unirep.calls == []
    np.testing.assert_array_equal(warm, cold)
    full, present_full = cached_sequence_embeddings(sequences, weights, cache, model=unirep, progress=False)
    assert sorted(t for c in unirep.calls for t in c) == sorted(set(present_all) - set(half))
    assert present_full.tolist() == [bool(s) for s in sequences] and present.sum() > 10
    np.testing.assert_array_equal(full[::2], cold)
    assert not full[~present_full].any()
    unirep.calls.clear()
    fresh = unirep.embed(present_all).numpy()
    np.testing.assert_allclose(full[present_full], fresh, rtol=0, atol=TOL)


def _first_blob(cache: PriorCache) -> bytes:
    with sqlite3.connect(cache.path) as conn:
        return bytes(conn.execute("SELECT vector FROM embeddings LIMIT 1").fetchone()[0])


def _filled_cache(folder, sequences, unirep, data_dir, n: int):
    """A closed cache holding the UniRep vectors of the first ``n`` sequences: (cache, weights, those
    sequences, their vectors)."""
    weights = data_dir / "models" / UNIREP64
    some = [s for s in sequences if s][:n]
    cache = PriorCache(folder)
    before, _ = cached_sequence_embeddings(some, weights, cache, model=unirep, progress=False)
    cache.close()
    return cache, weights, some, before


def test_corrupted_entry_is_detected_and_recomputed(tmp_path, sequences, unirep, data_dir):
    cache, weights, some, before = _filled_cache(tmp_path, sequences, unirep, data_dir, 12)
    blob = _first_blob(cache)
    raw = bytearray(cache.path.read_bytes())
    at = raw.find(blob)
    assert at >= 0 and raw.find(blob, at + 1) < 0
    raw[at + len(blob) // 2] ^= 0xFF  # one flipped byte inside one stored vector, on disk
    cache.path.write_bytes(bytes(raw))
    unirep.calls.clear()
    with pytest.warns(UserWarning, match="1 corrupt entry"):
        after, _ = cached_sequence_embeddings(some, weights, cache, model=unirep, progress=False)
    assert _n(unirep.calls) == 1 and cache.corrupt_entries == 1  # only the damaged one is recomputed
    np.testing.assert_allclose(after, before, rtol=0, atol=TOL)
    unirep.calls.clear()
    cached_sequence_embeddings(some, weights, cache, model=unirep, progress=False)
    assert unirep.calls == []  # the recomputed vector replaced the damaged row


def test_unreadable_cache_file_is_set_aside_and_recomputed(tmp_path, sequences, unirep, data_dir):
    cache, weights, some, before = _filled_cache(tmp_path, sequences, unirep, data_dir, 8)
    raw = bytearray(cache.path.read_bytes())
    raw[:100] = b"\x00garbage" * 12 + b"\x00" * 4  # the SQLite header destroyed
    cache.path.write_bytes(bytes(raw))
    unirep.calls.clear()
    with pytest.warns(UserWarning, match="unreadable"):
        after, _ = cached_sequence_embeddings(some, weights, PriorCache(tmp_path), model=unirep, progress=False)
    assert _n(unirep.calls) == len(some)
    np.testing.assert_allclose(after, before, rtol=0, atol=TOL)
    assert (tmp_path / (pc.DB_NAME + ".corrupt")).exists()
    assert PriorCache(tmp_path).counts() == {unirep_identity(weights): len(some)}


def test_cache_location_precedence(monkeypatch, tmp_path, encoder):
    monkeypatch.delenv(pc.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "omnicelltosg"
    monkeypatch.setenv(pc.CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert prior_cache_dir(None) == tmp_path / "mine"
    assert prior_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"  # build_dataset(cache_dir=...) wins
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(pc.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "omnicelltosg"
    # the cache the build opens by default really lands in $OMNICELLTOSG_CACHE
    monkeypatch.setenv(pc.CACHE_ENV, str(tmp_path / "mine"))
    cached_text_embeddings(["interferon alpha inducible protein"], PriorCache(prior_cache_dir(None)),
                           encoder=encoder, progress=False)
    assert (tmp_path / "mine" / pc.DB_NAME).is_file()


def test_different_encoder_identity_is_a_different_key(tmp_path, texts, encoder, data_dir, sequences, unirep):
    from dataset_script.build.text_encoder import TextEncoder
    from dataset_script.build.unirep import UniRep

    assert text_identity_of(encoder) == text_encoder_identity()
    short = text_encoder_identity(max_length=32)
    assert short != text_encoder_identity()
    assert entry_key(short, texts[0]) != entry_key(text_encoder_identity(), texts[0])
    assert entry_key(short, texts[0])[1] == entry_key(text_encoder_identity(), texts[0])[1]  # same content hash
    models = data_dir / "models"
    assert unirep_identity(models / UNIREP64) != unirep_identity(models / UNIREP256)
    some_texts = sorted({t for t in texts if t}, key=len)[:16]
    some_seqs = sorted({s for s in sequences if s}, key=len)[:6]
    cache = PriorCache(tmp_path)
    cached_text_embeddings(some_texts, cache, encoder=encoder, progress=False)
    cached_sequence_embeddings(some_seqs, models / UNIREP64, cache, model=unirep, progress=False)
    other = TextEncoder(max_length=32)
    calls = _count(other, "encode")
    cached_text_embeddings(some_texts, cache, encoder=other, progress=False)
    assert _n(calls) == len(some_texts)  # nothing of the 96-token encoder is reused
    big = UniRep.from_npz(models / UNIREP256)
    seq_calls = _count(big, "embed")
    emb, _ = cached_sequence_embeddings(some_seqs, models / UNIREP256, cache, model=big, progress=False)
    assert _n(seq_calls) == len(some_seqs) and emb.shape == (len(some_seqs), 256)
    assert sorted(cache.counts().values()) == sorted([len(some_texts), len(some_texts), len(some_seqs),
                                                      len(some_seqs)])


def _dataset_folder(root, entities, embeddings, encoders, knowledge) -> None:
    """A dataset folder's prior-relevant files, written with the build's own writers."""
    from dataset_script.build.writer import file_records
    from dataset_script.schema import ENTITY_SCHEMA

    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(entities[[f.name for f in ENTITY_SCHEMA]], schema=ENTITY_SCHEMA,
                                        preserve_index=False), root / "data" / "entities.parquet")
    pq.write_table(embeddings, root / "data" / "embeddings.parquet")
    info = {"encoders": encoders, "knowledge": knowledge, "files": file_records(root)}
    (root / "build_info.json").write_text(json.dumps(info))


def test_priors_from_a_dataset_seed_an_empty_cache(tmp_path, text_runs, entities, encoder, unirep, data_dir):
    from dataset_script.build.pipeline import _entity_priors, _Stopwatch

    weights = data_dir / "models" / UNIREP64
    warm = tmp_path / "warm"
    shutil.copytree(text_runs["cache"].folder, warm)  # texts cached; sequences computed here
    embeddings, encoders = _entity_priors(entities, data_dir, "unirep64", PriorCache(warm), False, _Stopwatch())
    assert encoders["identity"] == {"text": text_encoder_identity(), "sequence": unirep_identity(weights)}
    source = tmp_path / "dataset"
    _dataset_folder(source, entities, embeddings, encoders, {"sequence_model": "unirep64"})

    empty = PriorCache(tmp_path / "empty")
    report = seed_from_dataset(source, empty, text_identity=text_encoder_identity(),
                               sequence_identity=unirep_identity(weights), sequence_weights=UNIREP64)
    assert report["text"] > 0 and report["sequence"] > 0
    encoder.calls.clear()
    unirep.calls.clear()
    names = cached_text_embeddings(entities["name"].tolist(), empty, encoder=encoder, progress=False)
    seqs, present = cached_sequence_embeddings(entities["sequence"].tolist(), weights, empty, model=unirep,
                                               progress=False)
    assert encoder.calls == [] and unirep.calls == []
    stored = np.stack(embeddings.column("name_embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(names, stored)
    np.testing.assert_array_equal(seqs[present], np.stack(embeddings.column("sequence_embedding")
                                                          .to_numpy(zero_copy_only=False))[present])

    # another encoder recorded → not seeded (warned); a legacy build_info (no identity) still seeds
    info = json.loads((source / "build_info.json").read_text())
    info["encoders"]["identity"]["text"] = text_encoder_identity(max_length=32)
    (source / "build_info.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="text prior was made with another encoder"):
        report = seed_from_dataset(source, PriorCache(tmp_path / "other"), text_identity=text_encoder_identity())
    assert report == {"text": "different encoder", "sequence": "this build has no sequence prior"}
    del info["encoders"]["identity"]
    (source / "build_info.json").write_text(json.dumps(info))
    report = seed_from_dataset(source, PriorCache(tmp_path / "legacy"), text_identity=text_encoder_identity(),
                               sequence_identity=unirep_identity(weights), sequence_weights=UNIREP64)
    assert report["text"] > 0 and report["sequence"] > 0

    # a table changed after the build is refused
    pq.write_table(embeddings.slice(0, 3), source / "data" / "embeddings.parquet")
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        seed_from_dataset(source, PriorCache(tmp_path / "tampered"), text_identity=text_encoder_identity())


def test_priors_from_without_dataset_fails_before_any_work(tmp_path, data_dir):
    import yaml

    from dataset_script.build.pipeline import build_dataset
    from omnicelltosg.cli import _parser

    from .conftest import small_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe()))
    with pytest.raises(FileNotFoundError, match="build_info.json missing"):
        build_dataset(recipe, data_dir, tmp_path / "out", priors_from=tmp_path / "nothing", cache_dir=tmp_path / "c",
                      progress=False)
    assert not (tmp_path / "out").exists()
    args = _parser().parse_args(["build", "--priors-from", str(tmp_path / "ds")])
    assert args.priors_from == tmp_path / "ds"
