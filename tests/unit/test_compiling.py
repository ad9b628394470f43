"""``[resources] compile``: a compiled model trains only once its gradients match eager mode's,
and (marker ``gpu``) a training step on a GPU never waits for the card."""

import warnings

import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from fedfuse.bench.costs.flops import FlopMeter
from fedfuse.datasets import ClientData
from fedfuse.toolkit import compiling, ddpm, models
from fedfuse.toolkit.device import Resources, fabric

DATA = ClientData(torch.rand(64, 1, 8, 8) * 2 - 1, torch.zeros(64, dtype=torch.long), torch.arange(64))


def trained(resources=None, steps: int = 4, flops=None, dp=None):
    model = models.build_unet((1, 8, 8), "tiny", 0)
    ema = ddpm.Ema(model, 0.9)
    loss = ddpm.train(model, ddpm.build_scheduler(50), DATA, steps, ddpm.Recipe(batch_size=8, warmup_steps=2),
                      torch.Generator().manual_seed(0), resources, flops=flops, ema=ema, dp=dp)
    return loss, torch.cat([p.detach().flatten() for p in model.parameters()])


CALLS = []  # each call of a graph compiled by the counting backend
COUNTING = f"fedfuse_test_counting_{id(CALLS)}"  # this module object's own, however often it is imported


def counting_compiler(graph, example_inputs):
    """A torch.compile backend that runs the traced graph as it is, counting its calls."""
    def run(*args):
        CALLS.append(1)
        return graph(*args)
    return run


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16: Fabric's own backward
def test_a_compiled_model_that_passes_the_check_trains_what_eager_trains_and_counts_the_same_flops(precision):
    eager_flops, compiled_flops = FlopMeter(), FlopMeter()
    eager_loss, eager = trained(Resources(precision=precision), flops=eager_flops)
    CALLS.clear()
    loss, weights = trained(Resources(precision=precision, compile=COUNTING), flops=compiled_flops)
    assert len(CALLS) >= 4 + 1  # the 4 steps and the check ran the compiled graph (the FLOP step did not)
    assert ("UNet2DModel", (8, 1, 8, 8)) == next(k[:2] for k in compiling._checked if precision in k
                                                 and COUNTING in k)
    assert loss == pytest.approx(eager_loss, rel=1e-5)
    assert torch.allclose(weights, eager, atol=1e-5) and not torch.equal(weights, trained(steps=1)[1])
    assert compiled_flops.per_step == eager_flops.per_step and sum(eager_flops.per_step.values()) > 0


class Doubled(torch.nn.Module):
    """The same parameters as ``model``, another function: twice its output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        return UNet2DOutput(sample=2 * self.model(x, t).sample)


def test_the_gradient_gap_is_zero_for_the_same_function_and_large_for_another():
    model = models.build_unet((1, 8, 8), "tiny", 0)

    def dry_loss(module, device):  # draws from the global RNG: the check must give it back
        x = torch.linspace(-1, 1, 8 * 64).view(8, 1, 8, 8) + 0 * torch.randn(8, 1, 8, 8)
        return torch.nn.functional.mse_loss(module(x, torch.arange(8) * 6).sample, x)

    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # a gradient the caller holds
    rng = torch.get_rng_state()
    assert compiling.gradient_gap(model, model, fabric(), dry_loss) == 0
    assert compiling.gradient_gap(model, Doubled(model), fabric(), dry_loss) > 0.5
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())  # left as they were
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(compiling.CompileMismatch, match="eager mode's own gradients .* not finite"):
        compiling.gradient_gap(model, model, fabric(), lambda m, d: dry_loss(m, d) * float("inf"))


def wrong_compiler(scale: float):
    """A torch.compile backend that runs the traced graph and scales its outputs: a compiler
    whose result is another function (``nan``: one whose gradients are not numbers)."""
    def compile_graph(graph, example_inputs):
        def run(*args):
            out = graph(*args)
            return type(out)(o * scale if isinstance(o, torch.Tensor) and o.is_floating_point() else o for o in out)
        return run
    return compile_graph


torch._dynamo.register_backend(counting_compiler, COUNTING)
if "fedfuse_test_scaled" not in torch._dynamo.list_backends(exclude_tags=()):  # once per process
    torch._dynamo.register_backend(wrong_compiler(1.5), "fedfuse_test_scaled")
    torch._dynamo.register_backend(wrong_compiler(float("nan")), "fedfuse_test_nan")


@pytest.mark.parametrize("backend, gap", [("fedfuse_test_scaled", r"\d+\.\d%"), ("fedfuse_test_nan", "nan%")])
def test_a_compiler_that_changes_the_gradients_is_refused_with_the_gap_before_any_step(backend, gap):
    model = models.build_unet((1, 8, 8), "tiny", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(compiling.CompileMismatch, match=rf"\({backend}\) changes this model's gradients by {gap}"):
        ddpm.train(model, ddpm.build_scheduler(50), DATA, 2, ddpm.Recipe(batch_size=8), torch.Generator().manual_seed(0),
                   Resources(compile=backend))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before any step


def test_the_split_servers_training_compiles_too():
    from fedfuse.protocols.split_diffusion import task

    model = models.build_unet((1, 8, 8), "tiny", 0)
    pool = {"x_cut": DATA.images[:16], "cut": torch.arange(16)}
    loss = task.train_server(model, pool, 50, "exact", 2, ddpm.Recipe(batch_size=4), torch.Generator().manual_seed(0),
                             Resources(compile="aot_eager"))
    assert loss > 0 and any("aot_eager" in key and (4, 1, 8, 8) in key for key in compiling._checked)


def test_compile_settings_are_checked_when_the_suite_is_read():
    from fedfuse.bench.suites.parse import checked_resources
    from fedfuse.plugins.config import ConfigError

    assert checked_resources({"compile": "cudagraphs"}, "t")["compile"] == "cudagraphs"
    assert Resources(compile=True).compile_backend == "inductor" and Resources().compile_backend is None
    with pytest.raises(ConfigError, match="one of torch's backends .*cudagraphs.*got 'fast'"):
        checked_resources({"compile": "fast"}, "t")
    with pytest.raises(ConfigError, match="'compile'"):
        checked_resources({"compile": 3}, "t")


def test_dp_sgd_training_is_not_compiled():
    from fedfuse.toolkit.privacy import DpSgd

    dp = DpSgd(1.0, 1.0, torch.Generator().manual_seed(1), records=len(DATA))
    with pytest.raises(ValueError, match="DP-SGD"):
        trained(Resources(compile="aot_eager"), dp=dp)


def cuda_syncs(steps: int, resources: Resources) -> int:
    """How many times ``steps`` training steps made the host wait for the card."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trained(resources, steps=steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_training_step_on_cuda_never_waits_for_the_card(precision):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = Resources(accelerator="cuda", precision=precision)
    cuda_syncs(2, gpu)  # first use: Fabric, the allocator, cuBLAS set up
    assert cuda_syncs(12, gpu) == cuda_syncs(2, gpu)  # the loop's own: none per step


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cudagraphs", True])  # inductor's cold compile last: the session's limit
def test_compiled_training_on_cuda_trains_what_eager_trains_or_is_refused(backend):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _, eager = trained(Resources(accelerator="cuda"))
    try:
        _, weights = trained(Resources(accelerator="cuda", compile=backend))
    except compiling.CompileMismatch as refused:
        pytest.xfail(str(refused))  # measured and said: this torch's compiler is wrong here
    assert torch.allclose(weights, eager, atol=1e-4)


def test_the_compile_flag_overrides_the_suite_key():
    from fedfuse.bench.cli.main import build_parser
    from fedfuse.bench.cli.run import resource_flags

    def flags(*argv):
        return resource_flags(build_parser().parse_args(["run", "track-edge-quick", "--out", "o", *argv]))

    assert flags() == {} and flags("--compile", "true") == {"compile": "true"}
    assert flags("--compile", "cudagraphs") == {"compile": "cudagraphs"}
    as_stored = [Resources(compile=v) for v in ("true", "false", "cudagraphs")]
    assert [r.compile for r in as_stored] == [True, False, "cudagraphs"]  # as the suite's TOML would say
    assert [r.compile_backend for r in as_stored] == ["inductor", None, "cudagraphs"]
