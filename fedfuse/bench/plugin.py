"""The harness's own plugin: the metrics every cell records, the shipped hardware profiles and the tracks' studies."""

from fedfuse.plugins import MetricSpec, StudySpec, hookimpl

HARNESS_METRICS = [
    MetricSpec("train_loss", "mse", higher_is_better=False, aggregate="last",
               summary="clients' mean noise-prediction loss in the last round"),
    MetricSpec("eval_loss", "mse", higher_is_better=False, aggregate="last",
               summary="noise-prediction loss of the trained model(s) on the held-out split"),
    MetricSpec("bytes_up", "B", higher_is_better=False, aggregate="sum",
               summary="serialized bytes of all client->server messages (what crosses Flower)"),
    MetricSpec("bytes_down", "B", higher_is_better=False, aggregate="sum",
               summary="serialized bytes of all server->client messages"),
    MetricSpec("payload_up", "B", higher_is_better=False, aggregate="sum",
               summary="logical payload up: tensor bytes, or the protocol's declared packed size"),
    MetricSpec("payload_down", "B", higher_is_better=False, aggregate="sum",
               summary="logical payload down"),
    MetricSpec("messages", "count", higher_is_better=False, aggregate="sum",
               summary="Flower messages exchanged, both ways"),
    MetricSpec("exchanges", "count", higher_is_better=False, aggregate="sum",
               summary="the server's send-and-receive round trips"),
    MetricSpec("exchange_s", "s", higher_is_better=False, aggregate="sum",
               summary="real wall time of those round trips: the engine's overhead plus the clients' work"),
    MetricSpec("client_flops", "FLOP", higher_is_better=False, aggregate="sum",
               summary="all clients' training + sampling FLOPs (torch FlopCounterMode)"),
    MetricSpec("server_flops", "FLOP", higher_is_better=False, aggregate="sum",
               summary="the server's training + sampling FLOPs"),
    MetricSpec("latency_s", "s", higher_is_better=False, aggregate="sum",
               summary="simulated time: sum over rounds of the slowest client's down+compute+up, plus server"),
    MetricSpec("slowest_client_s", "s", higher_is_better=False, aggregate="max",
               summary="simulated compute + upload time of the slowest client in the slowest round: what a "
                       "round deadline bounds (T_cmp + T_up, as on-demand quantization's deadline_s)"),
    MetricSpec("energy_j", "J", higher_is_better=False, aggregate="sum",
               summary="simulated client energy: compute + uplink transmission + static power"),
    MetricSpec("model_params", "count", higher_is_better=False, aggregate="last",
               summary="parameters of the model the protocol trains (the size of what FedAvg sends)"),
    MetricSpec("trained_params", "count", higher_is_better=False, aggregate="last",
               summary="parameters clients train and send (adapters only, for LoRA)"),
    MetricSpec("engine_start_s", "s", higher_is_better=False, aggregate="last",
               summary="the engine's start-up: simulation, until Ray's ClientApp actors are up; deployment, until every SuperNode first answered"),
    MetricSpec("engine_reused", "", higher_is_better=False, aggregate="last",
               summary="simulation: 1 if the cell found the run's Ray runtime already started"),
    *(MetricSpec(f"ray_{what}", "count", higher_is_better=False, aggregate="last",
                 summary=f"simulation on a Ray cluster (--ray-address): the cluster's live {label}")
      for what, label in (("nodes", "nodes"), ("cpus", "CPUs"), ("gpus", "GPUs"))),
    # A track's compute budget (optimizer steps x batch size; fedfuse.bench.suites.parse.Track).
    MetricSpec("client_train_examples", "images", higher_is_better=False, aggregate="sum",
               summary="training images the clients processed (optimizer steps x batch), summed over clients and rounds"),
    MetricSpec("server_train_examples", "images", higher_is_better=False, aggregate="sum",
               summary="training images the server processed (optimizer steps x batch)"),
    MetricSpec("late_train_examples", "images", higher_is_better=False, aggregate="last",
               summary="training images the server processed after its last round (counted in train_examples)"),
    MetricSpec("pretrain_examples", "images", higher_is_better=False, aggregate="last",
               summary="training images a pre-training on the public split processed"),
    MetricSpec("train_examples", "images", higher_is_better=False, aggregate="last",
               summary="all training images processed: clients + server + pre-training (what a track's budget binds)"),
    MetricSpec("over_budget", "", higher_is_better=False, aggregate="last",
               summary="1 if train_examples exceeded the track's budget (the row is not ranked), else 0"),
    MetricSpec("over_dp_budget", "", higher_is_better=False, aggregate="last",
               summary="1 if the cell did not meet its track's DP budget (no DP, or a larger ε; not ranked), else 0"),
    MetricSpec("wall_s", "s", higher_is_better=False, aggregate="sum",
               summary="real wall-clock time of the cell on this machine"),
    # Quality, in the cell's feature space (named by its `feature_space`): computed once, at the end.
    MetricSpec("fid", "", higher_is_better=False, aggregate="last",
               summary="Frechet distance of generated vs held-out features (ranking metric)"),
    MetricSpec("kid", "", higher_is_better=False, aggregate="last",
               summary="kernel (MMD) distance, unbiased, mean over subsets (ranking metric)"),
    MetricSpec("kid_std", "", higher_is_better=False, aggregate="last", summary="KID's std over subsets"),
    MetricSpec("recall", "", higher_is_better=True, aggregate="last",
               summary="k-NN recall: share of real features covered by generated manifolds (ranking metric)"),
    MetricSpec("coverage", "", higher_is_better=True, aggregate="last",
               summary="k-NN coverage: share of real neighbourhoods with a generated sample (ranking metric)"),
    MetricSpec("precision", "", higher_is_better=True, aggregate="last",
               summary="k-NN precision; rises under blur and noise at these sizes: not for ranking"),
    MetricSpec("density", "", higher_is_better=True, aggregate="last", summary="k-NN density; not for ranking"),
    # Population quality (fedfuse.bench.engine.scoring): all clients' samples pooled against the whole held-out
    # set; the unprefixed figures above are client quality (each client on its own label mix, the mean).
    *(MetricSpec(f"pop_{m}", "", higher_is_better=better, aggregate="last",
                 summary=f"population {m}: all clients' samples pooled vs the whole held-out set")
      for m, better in (("fid", False), ("kid", False), ("recall", True), ("coverage", True), ("fid_vs_noise", False))),
    *(MetricSpec(f"pop_ref_fid_{ref}", "", higher_is_better=False, aggregate="last",
                 summary=f"population FID of the '{ref}' reference at the cell's n") for ref in ("real", "blur", "noise")),
    MetricSpec("eval_real_n", "count", higher_is_better=True, aggregate="last",
               summary="client quality: held-out images of the fewest-imaged client's label mix (few: read KID beside FID)"),
    MetricSpec("pop_eval_real_n", "count", higher_is_better=True, aggregate="last",
               summary="population quality: held-out images scored against (fewer than n where some class is public)"),
    # What the quality figures are worth: the same code on real, blurred and noise images at the cell's n.
    MetricSpec("fid_vs_noise", "", higher_is_better=False, aggregate="last",
               summary="FID / FID of pure noise at the same n; above 0.5 the cell is 'not learned' (unranked)"),
    *(MetricSpec(f"ref_{m}_{ref}", "", higher_is_better=m == "recall", aggregate="last",
                 summary=f"{m} of the '{ref}' reference ({what}) at the cell's n and feature space")
      for ref, what in (("real", "real training images: the floor"), ("blur", "those images blurred, sigma=1"),
                        ("noise", "uniform noise")) for m in ("fid", "recall")),
    MetricSpec("ref_separation", "", higher_is_better=True, aggregate="last",
               summary="FID(noise) / FID(real floor): below 20 the feature space cannot rank models"),
    # Disclosure of what clients share (higher MSE / lower SSIM / higher KID = less disclosed).
    MetricSpec("nn_mse", "", higher_is_better=True, aggregate="last",
               summary="mean MSE of shared tensors to their nearest private image (higher = less disclosed)"),
    MetricSpec("nn_ssim", "", higher_is_better=False, aggregate="last",
               summary="mean SSIM of shared tensors to their nearest private image (lower = less disclosed)"),
    MetricSpec("kid_to_private", "", higher_is_better=True, aggregate="last",
               summary="KID between shared tensors and private images (higher = less disclosed)"),
    # Membership inference on the model the server holds (loss-threshold attack; docs/metrics.md).
    MetricSpec("mia_auc", "", higher_is_better=False, aggregate="last",
               summary="membership attack's AUC, clients' private vs held-out images (0.5 = no leak)"),
    MetricSpec("mia_tpr_at_1fpr", "", higher_is_better=False, aggregate="last",
               summary="membership attack's true-positive rate at 1% false positives (~0.01 = no leak)"),
    # Differential privacy (a suite entry's dp table; docs/privacy.md): the budget accounted.
    MetricSpec("dp_epsilon", "", higher_is_better=False, aggregate="last",
               summary="DP-SGD's ε at dp_delta for the least protected image (null: no DP claimed, shown ∞)"),
    MetricSpec("dp_delta", "", higher_is_better=False, aggregate="last",
               summary="the δ that dp_epsilon holds at (null without DP)"),
    MetricSpec("mia_members", "count", higher_is_better=True, aggregate="last",
               summary="member images the membership attack scored (not a ranking figure)"),
    MetricSpec("mia_nonmembers", "count", higher_is_better=True, aggregate="last",
               summary="held-out images of the same classes it scored (not a ranking figure)"),
    # Time- and energy-to-quality (suite target = { fid = X }; docs/suites.md).
    MetricSpec("target_fid", "", higher_is_better=False, aggregate="last",
               summary="FID of target_samples images at the rounds the target is checked"),
    MetricSpec("target_reached", "", higher_is_better=True, aggregate="last",
               summary="1 if some round met the suite's quality target, else 0"),
    MetricSpec("rounds_to_target", "rounds", higher_is_better=False, aggregate="last",
               summary="the first round whose target_fid met the target"),
    MetricSpec("energy_to_target_j", "J", higher_is_better=False, aggregate="last",
               summary="simulated client energy of the rounds until the target was met"),
    MetricSpec("latency_to_target_s", "s", higher_is_better=False, aggregate="last",
               summary="simulated latency of the rounds until the target was met"),
    MetricSpec("bytes_to_target", "B", higher_is_better=False, aggregate="last",
               summary="bytes up and down until the target was met"),
    MetricSpec("e_static_j", "J", higher_is_better=False, aggregate="sum",
               summary="static energy: each device's idle power over the rounds it was awake for"),
    MetricSpec("clients_late", "count", higher_is_better=False, aggregate="sum",
               summary="with a suite deadline_s: client rounds that missed the deadline (updates left out)"),
    # What generating one image costs a client at deployment (0 when the server generates).
    MetricSpec("client_gen_flops", "FLOP", higher_is_better=False, aggregate="last",
               summary="client FLOPs to generate one image at deployment (torch's counter x steps)"),
    MetricSpec("client_gen_s", "s", higher_is_better=False, aggregate="last",
               summary="simulated client time to generate one image (cost model, client's device)"),
    MetricSpec("client_gen_j", "J", higher_is_better=False, aggregate="last",
               summary="simulated client energy to generate one image (compute, and static power for that time)"),
    # ... and what crosses the network for it (measured by the harness while clients generate)
    MetricSpec("client_gen_bytes", "B", higher_is_better=False, aggregate="last",
               summary="bytes crossing Flower per image a client generates at deployment (e.g. a split cut's x_cut)"),
    MetricSpec("client_gen_net_s", "s", higher_is_better=False, aggregate="last",
               summary="simulated transfer time of those bytes on the client's network, per image"),
    MetricSpec("client_gen_net_j", "J", higher_is_better=False, aggregate="last",
               summary="simulated client radio energy of those bytes (uplink), per image"),
    MetricSpec("server_gen_flops", "FLOP", higher_is_better=False, aggregate="last",
               summary="server FLOPs per image a client generates at deployment (split: the steps above the cut)"),
    MetricSpec("server_gen_s", "s", higher_is_better=False, aggregate="last",
               summary="simulated server time per image a client generates at deployment"),
]


@hookimpl
def fedfuse_add_metrics():
    return list(HARNESS_METRICS)


@hookimpl
def fedfuse_add_studies():
    return [StudySpec("track-edge", summary="every protocol on one edge task, budget and evaluation (the README's headline)"),
            StudySpec("track-edge-quick", summary="track-edge at a budget of minutes (scripts/smoke.sh)"),
            *(StudySpec(name, summary="record-level DP: what ε buys in membership inference and costs in quality",
                        columns=("eval_loss", "nn_mse"),
                        panels=(("dp_epsilon", "fid"), ("dp_epsilon", "mia_auc")),
                        claims="fedfuse.leaderboard.dp_claims:privacy_utility")
              for name in ("privacy-utility", "privacy-utility-quick"))]


@hookimpl
def fedfuse_add_profiles():
    from fedfuse.bench.costs.hardware import shipped_profiles

    return shipped_profiles()
