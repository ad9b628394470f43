"""The harness's evaluation of a deployment (fedfuse/bench/engine/scoring.py): the label mixes,
the held-out sets drawn in them and the requests a deployment answers."""

import numpy as np
import pytest

from fedfuse.bench.engine.scoring import apportion, label_mix, pick_in_mix, real_counts, requested_labels


def test_apportion_splits_exactly_by_largest_remainder():
    assert apportion(np.array([1.0, 1.0, 1.0]), 10).tolist() == [4, 3, 3]
    assert apportion(np.array([0.0, 3.0, 1.0]), 8).tolist() == [0, 6, 2]
    counts = apportion(np.array([5.0, 2.0, 0.5, 0.0, 7.3]), 97)
    assert counts.sum() == 97 and counts[3] == 0


def test_real_sets_keep_the_mix_and_never_draw_an_image_twice():
    mix = np.array([60.0, 20.0, 20.0, 0.0])
    available = np.array([30.0, 30.0, 30.0, 30.0])
    counts = real_counts(mix, available, 200)
    assert counts.tolist() == [30, 10, 10, 0]  # class 0 has 30 held out: at 60 % that is 50 images in all
    assert real_counts(mix, np.array([300.0] * 4), 100).tolist() == [60, 20, 20, 0]
    labels = np.array([0, 1, 2, 0, 1, 0, 3, 0])
    picked = pick_in_mix(np.arange(8)[::-1], labels, np.array([2, 1, 0, 1]))
    assert sorted(labels[picked].tolist()) == [0, 0, 1, 3] and len(set(picked.tolist())) == 4
    assert picked.tolist()[:2] == [7, 5]  # the first of each class in the given order


def test_a_conditional_request_asks_for_the_clients_own_mix_in_a_seeded_order():
    mix = label_mix(np.array([3, 3, 3, 7]), 10)
    labels = requested_labels(mix, 100, seed=1)
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [0, 0, 0, 75, 0, 0, 0, 25, 0, 0]
    assert labels.tolist() == requested_labels(mix, 100, seed=1).tolist() != requested_labels(mix, 100, seed=2).tolist()
    assert labels.tolist() != sorted(labels.tolist())  # shuffled: a sample grid shows both classes


def test_an_unconditional_deployment_on_a_conditional_track_is_refused():
    from types import SimpleNamespace

    from fedfuse.bench.engine.scoring import Deployment, evaluate

    run = SimpleNamespace(cell=SimpleNamespace(evaluation={"conditional": True}))
    with pytest.raises(ValueError, match="asks for class-conditional generation"):
        evaluate(run, Deployment(lambda requests: {}, conditional=False))


def test_a_class_the_held_out_split_lacks_is_left_out_of_the_real_set():
    counts = real_counts(np.array([5.0, 5.0, 10.0]), np.array([30.0, 0.0, 30.0]), 60)
    assert counts.tolist() == [15, 0, 30]  # class 1: nothing held out to score it against
    assert real_counts(np.array([0.0, 4.0, 0.0]), np.array([30.0, 0.0, 30.0]), 60).sum() == 0
    assert pick_in_mix(np.arange(5), np.zeros(5, dtype=int), np.array([0, 0])).size == 0


def test_a_deployment_must_answer_every_client_it_was_asked_for():
    from types import SimpleNamespace

    import torch

    from fedfuse.bench.engine.scoring import Deployment, Scorer

    scorer = Scorer.__new__(Scorer)  # only what generated() reads
    scorer.run = SimpleNamespace(uncounted=lambda: __import__("contextlib").nullcontext())
    scorer.cell, scorer.n = SimpleNamespace(clients=3, seed=0), 4
    scorer.requests = lambda *asked: {c: None for c in range(3)}
    images = {0: torch.zeros(4, 1, 8, 8), 2: torch.zeros(4, 1, 8, 8)}  # client 1 missing
    with pytest.raises(ValueError, match=r"answered for clients \[0, 2\]; the harness asked \[0, 1, 2\]"):
        scorer.generated(Deployment(lambda requests: images))
    with pytest.raises(ValueError, match="cannot be conditional"):
        Deployment(lambda requests: {}, conditional=True, shared=True)


@pytest.mark.parametrize("public", [[], [0, 1, 2, 3, 4]])
def test_population_quality_is_scored_on_the_classes_the_clients_hold(tmp_path, public):
    """With public classes no client holds, the population's real images (and its references'
    pool) are drawn in the clients' pooled label mix, not from the whole held-out set."""
    from fedfuse.bench.engine.scoring import Scorer
    from fedfuse.bench.engine.services import ServerRun
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import tiny_cell

    cell = tiny_cell("fedavg", {"model": "tiny"}, clients=2, samples=64, dataset_args={"public_classes": public})
    scorer = Scorer(ServerRun.for_cell(cell, tmp_path, registry()))
    real, pool, key = scorer.population_real()
    eval_labels = scorer.data.eval_labels.numpy()
    if public:
        held = set(np.flatnonzero(sum(scorer.mix_of(c) for c in range(2))).tolist())
        assert held == {5, 6, 7, 8, 9} and key.startswith("the clients' pooled label mix")
        label_of = {img.numpy().tobytes(): int(label) for img, label in zip(scorer.data.eval_images, eval_labels)}
        assert {label_of[img.numpy().tobytes()] for img in real} <= held and len(pool) == 64
    else:
        assert len(real) == 64 and key.startswith("all held-out") and pool is scorer.data.train_images


def test_a_reference_model_is_scored_exactly_as_the_cells_deployment(tmp_path):
    """``run.score_reference`` (e.g. fedavg-lora's base) gives the figures the harness gives the
    cell's own deployment of the same model, on the same distributions, under its prefix."""
    import contextlib

    import torch

    from fedfuse.bench.engine.scoring import Deployment, quality
    from fedfuse.bench.engine.services import ServerRun
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import tiny_cell

    def generate(requests):  # the same images for the same request: a model's stand-in
        return {c: torch.rand(r.n, 1, 8, 8, generator=torch.Generator().manual_seed(r.seed)) * 2 - 1
                for c, r in requests.items()}

    cell = tiny_cell("fedavg", {"model": "tiny"}, clients=2, samples=32, dataset_args={"public_classes": [0, 1, 2]})
    run = ServerRun.for_cell(cell, tmp_path, registry())
    run.uncounted = lambda: contextlib.nullcontext({})  # no Flower grid here: nothing crosses
    own = quality(run, Deployment(generate, conditional=True))
    base = run.score_reference(generate, prefix="base_", conditional=True)
    scored = {k: v for k, v in own.items() if not k.startswith("client_gen_")}  # the deployment's traffic: the cell's only
    assert base == {f"base_{k}": v for k, v in scored.items() if k not in ("feature_space", "featnet_accuracy")}
    assert own["client_gen_bytes"] == 0  # nothing crossed Flower: the clients generated alone
    assert base["base_eval_distribution"].startswith("each client's label mix") and base["base_fid"] > 0
    assert {p.name for p in tmp_path.glob("base_*.png")} == {"base_samples.png", "base_samples_client0.png",
                                                             "base_samples_client1.png"}


def test_the_quality_target_asks_each_client_for_its_share_and_scores_the_pool(tmp_path):
    """``run.target_deployment``: nothing in a round the target is not checked; in one it is,
    ``target_samples`` images shared among the clients by data size, each in its own label mix,
    pooled and scored against as many held-out images (here every class: the whole held-out set)."""
    import contextlib

    import torch

    from fedfuse.bench.engine.services import ServerRun
    from fedfuse.bench.metrics.quality import embed, fid
    from fedfuse.bench.suites.cells import cell_partitions
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import tiny_cell

    asked = {}

    def generate(requests):
        asked.update(requests)
        return {c: torch.rand(r.n, 1, 8, 8, generator=torch.Generator().manual_seed(r.seed)) * 2 - 1
                for c, r in requests.items()}

    cell = tiny_cell("fedavg", {"model": "tiny"}, clients=3, rounds=4, target={"fid": 50}, eval_every=3,
                     target_samples=40, partitioners=[{"name": "dirichlet", "alpha": 0.3}])
    run = ServerRun.for_cell(cell, tmp_path, registry())
    run.uncounted = lambda: contextlib.nullcontext({})  # no Flower grid here
    assert run.target_deployment(2, generate, conditional=True) == {} and not asked  # checked in rounds 3 and 4
    figures = run.target_deployment(3, generate, conditional=True)
    parts = cell_partitions(cell)
    assert sum(r.n for r in asked.values()) == 40
    assert [asked[c].n for c in sorted(asked)] == [round(40 * len(p) / sum(map(len, parts))) for p in parts]
    for c, r in asked.items():  # each client's own classes only
        assert set(r.labels.tolist()) <= set(run.data.train_labels[parts[c]].tolist())
    images = torch.cat([generate({c: r})[c] for c, r in sorted(asked.items())])
    net = run.feature_space()[0]
    assert figures["target_fid"] == pytest.approx(fid(embed(net, run.eval_subset(40)[0]), embed(net, images)))
    # a round records the harness's score, not a figure the protocol hands round_end
    assert run.harness_target(3, {"target_fid": 0.0, "train_loss": 1.0}) == {"train_loss": 1.0, **figures}
    assert run.harness_target(4, {"target_fid": 0.0}) == {}  # not scored by the harness: no such figure
