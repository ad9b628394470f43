"""The shared DDPM recipe: reproducible on the CPU, warm-up and EMA as documented, presets,
the [resources] table, and (marker ``gpu``) the same path on CUDA."""

import re
from pathlib import Path

import pytest
import torch

from fedfuse.datasets import ClientData
from fedfuse.toolkit import ddpm, models
from fedfuse.toolkit.device import Resources

ROOT = Path(__file__).resolve().parents[2]


DATA = ClientData(torch.rand(64, 1, 8, 8) * 2 - 1, torch.zeros(64, dtype=torch.long), torch.arange(64))


def trained(seed: int, resources=None, steps: int = 4):
    model = models.build_unet((1, 8, 8), "tiny", 0)
    ema = ddpm.Ema(model, 0.9)
    loss = ddpm.train(model, ddpm.build_scheduler(50), DATA, steps, ddpm.Recipe(batch_size=8, warmup_steps=2),
                      torch.Generator().manual_seed(seed), resources, ema=ema)
    return loss, model.state_dict(), ema.model.state_dict()


def test_same_seed_gives_bit_identical_models_on_cpu():
    (l1, m1, e1), (l2, m2, e2) = trained(1), trained(1)
    assert l1 == l2 and all(torch.equal(m1[k], m2[k]) and torch.equal(e1[k], e2[k]) for k in m1)
    _, m3, _ = trained(2)
    assert not all(torch.equal(m1[k], m3[k]) for k in m1)  # and another seed does differ


def test_warmup_is_linear_and_continues_across_rounds():
    assert [ddpm.warmup(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ddpm.warmup(0, 0) == 1.0


def test_ema_warms_up_then_lags_and_survives_a_round_trip():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ddpm.Ema(model, 0.99)
    ema.update(model)  # the first update copies
    model.weight.data.fill_(1.0)
    ema.update(model)  # after k = 1 step the decay is min(0.99, 2/11)
    assert ema.model.weight.item() == pytest.approx(1 - 2 / 11)
    again = ddpm.Ema(model, 0.99, ema.state_dict())
    assert again.averaged.n_averaged.item() == 2 and again.model.weight.item() == ema.model.weight.item()
    rounds = ddpm.Ema(model, 0.99, steps_per_update=10)  # one update stands for 10 steps
    rounds.update(model)
    model.weight.data.fill_(0.0)
    rounds.update(model)
    assert rounds.model.weight.item() == pytest.approx((11 / 20) ** 10, rel=1e-5)  # float32


def test_fused_ema_update_is_bit_identical_to_torchs_per_tensor_one():
    from torch.optim.swa_utils import AveragedModel

    model = models.build_unet((1, 8, 8), "tiny", 0)
    decay = lambda k: min(0.995, (1 + k) / (10 + k))  # noqa: E731
    reference = AveragedModel(model, use_buffers=True, avg_fn=lambda a, c, n: a + (c - a) * (1 - decay(int(n))))
    ema = ddpm.Ema(model, 0.995)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        ema.update(model), reference.update_parameters(model)
    got, want = ema.state_dict(), reference.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # a plugin's model may carry integer buffers (BatchNorm's counter): they follow the model
    bn = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = ddpm.Ema(bn, 0.9)
    for _ in range(3):
        bn(torch.randn(4, 3, generator=gen))
        ema.update(bn)
    assert ema.model[1].num_batches_tracked.item() == 3 and ema.averaged.n_averaged.item() == 3


def documented_presets() -> dict[str, tuple[str, float]]:
    """{preset: (widths, parameters)} as docs/quality.md states them: `tiny` (16/32 channels, 164 k ...)."""
    line = next(ln for ln in (ROOT / "docs" / "quality.md").read_text().splitlines() if "presets `tiny`" in ln)
    found = re.findall(r"`(\w+)` \((\d+/\d+)[^)]*?([\d.]+) ([kM])", line)
    return {name: (widths, float(n) * {"k": 1e3, "M": 1e6}[unit]) for name, widths, n, unit in found}


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_presets_have_their_documented_size(preset):
    widths, params = documented_presets()[preset]
    assert widths == "/".join(map(str, models.PRESETS[preset]["widths"]))
    model = models.build_unet((1, 14, 14), preset, 0)
    counted = sum(p.numel() for p in model.parameters())
    assert abs(counted - params) <= 0.05 * params, (counted, params)  # the docs round to 2-3 digits
    assert model(torch.zeros(2, 1, 14, 14), torch.tensor([1, 2])).sample.shape == (2, 1, 14, 14)


def test_resources_reject_unknown_values():
    with pytest.raises(ValueError):
        Resources(gpus_per_client=-1)
    with pytest.raises(ValueError):
        Resources(cpus_per_client=0)


def test_cell_resources_are_the_system_not_the_identity():
    from fedfuse.bench.suites.cells import CellSpec

    cpu = CellSpec("s", "1", "a", "fedavg", "1", {}, "digits", {}, "iid")
    gpu = CellSpec("s", "1", "a", "fedavg", "1", {}, "digits", {}, "iid", resources={"accelerator": "cuda"})
    assert cpu.cell_id == gpu.cell_id and gpu.system.accelerator == "cuda"


@pytest.mark.gpu
def test_training_and_sampling_run_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import time

    from fedfuse.toolkit.device import describe
    from fedfuse.toolkit.sampling import sample

    gpu = Resources(accelerator="cuda")
    start = time.time()
    loss, state, _ = trained(1, gpu, steps=20)
    print(f"\n{describe(gpu)}: {(time.time() - start) / 20:.4f} s per step (tiny, 8x8, batch 8)")
    assert all(t.device.type == "cpu" for t in state.values()) and loss > 0  # handed back on the CPU
    model = models.build_unet((1, 8, 8), "tiny", 0)
    images = sample(model, 16, (1, 8, 8), 50, 5, resources=gpu)
    assert images.device.type == "cpu" and torch.isfinite(images).all()


def test_train_adds_a_protocols_extra_loss_computed_on_the_model_itself():
    from fedfuse.datasets import ClientData
    from fedfuse.toolkit import ddpm, models

    data = ClientData(torch.rand(32, 1, 8, 8) * 2 - 1, torch.zeros(32, dtype=torch.long), torch.arange(32))
    recipe, seen = ddpm.Recipe(batch_size=8, warmup_steps=0, lr=1e-2), []

    def drift(extra_loss=None) -> float:
        model = models.build_unet((1, 8, 8), "tiny", 0)
        anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
        ddpm.train(model, ddpm.build_scheduler(50), data, 5, recipe, torch.Generator().manual_seed(0),
                   extra_loss=extra_loss and extra_loss(anchor))
        return sum(((p.detach() - anchor[k]) ** 2).sum().item() for k, p in model.named_parameters())

    def proximal(anchor):
        def term(module):
            params = dict(module.named_parameters())
            seen.append(set(params) == set(anchor))  # the model's own names, not a wrapper's
            return 100.0 * sum(((params[k] - w) ** 2).sum() for k, w in anchor.items())
        return term

    assert drift(proximal) < 0.5 * drift() and seen and all(seen)


def test_gpu_presets_build_and_large_needs_a_side_divisible_by_4():
    from fedfuse.toolkit import models

    sizes = {name: sum(p.numel() for p in models.build_unet((1, 8, 8), name, 0).parameters()) for name in ("wide", "large")}
    assert 3.9e6 < sizes["wide"] < 4.1e6 and 15.6e6 < sizes["large"] < 15.8e6  # docs/quality.md's figures
    with pytest.raises(ValueError, match="must divide by 4, got 14x14"):
        models.build_unet((1, 14, 14), "large", 0)


def test_training_flops_come_from_a_dry_step_that_leaves_no_trace():
    """The loop counts a throwaway step on fixed inputs, once per process and cell (scope), and
    runs every real step uncounted: same FLOPs as counting a real step, and bit-identical weights
    to a run that counts nothing (the counter alone changes a backward pass's last bits)."""
    from fedfuse.bench.costs.flops import FlopMeter

    def run(meter, steps=3, seed=1):
        model = models.build_unet((1, 8, 8), "tiny", 0)
        ddpm.train(model, ddpm.build_scheduler(50), DATA, steps, ddpm.Recipe(batch_size=8, warmup_steps=2),
                   torch.Generator().manual_seed(seed), flops=meter)
        return model.state_dict()

    def real_step_flops():  # the reference: one real step under the counter
        model, meter = models.build_unet((1, 8, 8), "tiny", 0), FlopMeter()
        scheduler, gen = ddpm.build_scheduler(50), torch.Generator().manual_seed(0)
        ddpm.fit(model, lambda module, device: ddpm.diffusion_loss(module, scheduler, DATA.sample_batch(8, gen)[0], gen,
                                                                  None, None, device), 1, ddpm.Recipe(batch_size=8),
                 flops=meter, shape_of=lambda: (8, 1, 8, 8))
        return meter.take()["flops_train"]

    counted, plain = FlopMeter(scope="cell-a"), None
    weights, reference = run(counted), run(plain)
    assert all(torch.equal(weights[k], reference[k]) for k in weights)  # no trace in the result
    assert counted.take()["flops_train"] == 3 * real_step_flops() > 0
    again = FlopMeter(scope="cell-a")  # a later message of the cell: measured figure reused
    run(again, steps=5)
    assert again.take()["flops_train"] == 5 * real_step_flops()


def test_resources_table_and_flags(cli, tmp_path):
    from helpers import write_suite

    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n[resources]\naccelerator = "tpu"\n')
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "[resources]: key 'accelerator' is 'tpu'" in done.stderr
    assert not (tmp_path / "out").exists()
    done = cli("run", str(suite), "--out", str(tmp_path / "out"), "--precision", "8-bit")
    assert done.returncode == 2 and "invalid choice: '8-bit'" in done.stderr



def test_the_recipe_trains_with_sgd_when_asked_and_keeps_old_cell_ids():
    """optimizer = "sgd" (with momentum and weight decay) reaches the optimizer fit builds; at
    their defaults the three fields leave a config's cell identity as it was before them."""
    import dataclasses

    from fedfuse.plugins.config import identity
    from fedfuse.protocols.fedavg.plugin import FedAvgConfig

    sgd = FedAvgConfig(optimizer="sgd", momentum=0.9, weight_decay=0.0, lr=0.1).recipe
    optimizer = sgd.make_optimizer([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert isinstance(FedAvgConfig().recipe.make_optimizer([torch.nn.Parameter(torch.zeros(2))]), torch.optim.AdamW)
    default = identity(FedAvgConfig())
    assert not {"optimizer", "momentum", "weight_decay"} & set(default)
    assert identity(FedAvgConfig(optimizer="sgd"))["optimizer"] == "sgd"
    assert set(dataclasses.asdict(FedAvgConfig())) - set(default) >= {"optimizer", "aggregator"}
    with pytest.raises(ValueError, match="'momentum' must be in"):
        FedAvgConfig(momentum=1.5)
    model = torch.nn.Linear(2, 1)
    loss = lambda module, device: module(torch.ones(4, 2, device=device)).pow(2).mean()  # noqa: E731
    from fedfuse.toolkit.ddpm import fit

    before = model.weight.detach().clone()
    fit(model, loss, 3, sgd)
    assert not torch.equal(model.weight, before)  # SGD moved it
