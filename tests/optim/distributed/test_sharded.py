"""``ShardedOptimizer`` for real: 2 and 3 forked gloo ranks on CPU against the single-process optimizers.

One launch per world size runs every scenario of :mod:`tests.optim.distributed.scenarios` (fork starts in well
under a second; spawn re-imports torch per rank) with a 60 s collective timeout and a hard join timeout, so a
hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

from precond.optim import MFAC, SOAP, Lion, Muon
from precond.optim.distributed import ShardedOptimizer
from tests.optim.distributed import scenarios
from tests.optim.distributed.scenarios import HPARAMS, Net, _data, _loss

WORLDS = (2, 3)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    x, y = _data(5, 32, 16, 4)
    for _ in range(steps):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()


def _single_process_checkpoint(tmp: Path) -> list[torch.Tensor]:
    """Plain SOAP: 3 steps, a W = 1 DCP checkpoint for the workers, 3 more steps (the reference trajectory)."""
    torch.manual_seed(0)
    model = Net()
    opt = SOAP(model.parameters(), **HPARAMS["soap"])
    _train(model, opt, 3)
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(tmp / "w1"))
    torch.save(model.state_dict(), tmp / "w1_model.pt")
    _train(model, opt, 3)
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module", params=WORLDS)
def launched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world: int = request.param
    tmp = tmp_path_factory.mktemp(f"world{world}")
    reference = _single_process_checkpoint(tmp)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=scenarios.worker, args=(rank, world, str(tmp))) for rank in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join()
    assert not hung, f"{len(hung)} worker(s) hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    results = [torch.load(tmp / f"{rank}.pt", weights_only=False) for rank in range(world)]
    for res in results:
        assert "crash" not in res, res.get("crash")
    return {"world": world, "tmp": tmp, "results": results, "reference": reference}


@pytest.mark.parametrize("name", ["soap", "shampoo", "muon"])
def test_replicated_is_bitwise_single_process(launched: dict[str, Any], name: str) -> None:
    results = launched["results"]
    for res in results:
        got = res[f"replicated_{name}"]
        assert got["diff"] == 0.0
        # one vote (non-finite, refresh due, gradient presence) + one all_gather per param group (2 groups)
        assert got["counts"] == {"all_reduce": 1, "all_gather_into_tensor": 2}
    owned = [res[f"replicated_{name}"]["owned"] for res in results]
    assert sum(owned) == 2 * 5  # Net: 4 used layers + the dead one, weight and bias each
    assert min(owned) >= 1


@pytest.mark.parametrize("name", ["soap", "shampoo", "muon"])
def test_fsdp2_is_exact(launched: dict[str, Any], name: str) -> None:
    for res in launched["results"]:
        got = res[f"fsdp_{name}"]
        assert got["diff"] == 0.0
        # one vote + per param group one all_to_all there and one back (the mirror's full_tensor calls are outside)
        assert got["counts"] == {"all_reduce": 1, "all_to_all_single": 2}


def test_ranks_that_own_nothing(launched: dict[str, Any]) -> None:
    results = [res["lonely"] for res in launched["results"]]
    assert [r["owns"] for r in results] == [True] + [False] * (launched["world"] - 1)
    for r in results:
        assert r["diff"] == 0.0
        assert r["loaded"]


@pytest.mark.parametrize("name", ["shampoo", "muon"])
def test_ddp_matches_one_process_on_the_whole_batch(launched: dict[str, Any], name: str) -> None:
    for res in launched["results"]:
        got = res[f"ddp_{name}"]
        # DDP averages per-rank gradients: float rounding, not bitwise (relative to how far training moved them)
        assert got["diff"] < 1e-3 * got["moved"], (got["diff"], got["moved"])
        assert got["losses"][0] == pytest.approx(got["losses"][1], rel=1e-5)


def test_bf16_updates_stay_replicated_and_close(launched: dict[str, Any]) -> None:
    for res in launched["results"]:
        got = res["bf16"]
        assert got["replicas"] == 0.0
        assert 0.0 < got["diff"] < 0.02 * got["moved"]  # bf16 has an 8-bit mantissa: ~0.4% per update


def test_checkpoint_same_world_resumes_bitwise(launched: dict[str, Any]) -> None:
    for res in launched["results"]:
        assert res["ckpt_same"]["untouched"]  # get_optimizer_state_dict on a fresh optimizer took no step
        assert res["ckpt_same"]["diff"] == 0.0
    assert launched["results"][0]["fsdp_muon"]["resume"] == 0.0


def test_checkpoint_across_world_sizes(launched: dict[str, Any]) -> None:
    reference = launched["reference"]
    for res in launched["results"]:  # 1 → W
        for got, want in zip(res["ckpt_across"]["params"], reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # W → 1: plain single-process SOAP loads the W-rank checkpoint
    tmp = launched["tmp"]
    model = Net()
    model.load_state_dict(torch.load(tmp / "from_world_model.pt"))
    opt = SOAP(model.parameters(), **HPARAMS["soap"])
    sd = {"optim": get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=str(tmp / "from_world"))
    set_optimizer_state_dict(model, opt, sd["optim"])
    _train(model, opt, 3)
    for got, want in zip(model.parameters(), reference, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-7)


def test_disagreements_fail_on_every_rank(launched: dict[str, Any]) -> None:
    world = launched["world"]
    for res in launched["results"]:
        got = res["refusals"]
        assert got["partial"] is not None and "some ranks only" in got["partial"]
        assert got["raise"] is not None and "non-finite" in got["raise"]
        assert got["skipped"]
        assert got["skips"] > 0
    # every parameter with a gradient counts the skip once, on its owner: 8 parameters over the ranks
    assert sum(res["refusals"]["skips"] for res in launched["results"]) == 8
    assert "mix DTensors" in launched["results"][0]["fsdp_muon"]["mixed"]
    assert world in WORLDS


def test_world_of_one_is_the_single_process_optimizer() -> None:
    torch.manual_seed(0)
    model = Net()
    ref = Net()
    ref.load_state_dict(model.state_dict())
    opt = ShardedOptimizer(Muon, model.named_parameters(), lr=0.02)
    ref_opt = Muon(ref.named_parameters(), lr=0.02)
    _train(model, opt, 3)
    _train(ref, ref_opt, 3)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    mine, theirs = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    assert set(theirs) < set(mine)  # state from construction: the dead layer has (zero) state too
    for key, value in theirs.items():
        assert mine[key].keys() == value.keys()


def test_bad_arguments() -> None:
    params = [torch.nn.Parameter(torch.zeros(3, 3))]
    for cls in (Lion, MFAC, torch.optim.AdamW):
        with pytest.raises(TypeError, match="SOAP, Shampoo or Muon"):
            ShardedOptimizer(cls, params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="communication_dtype"):
        ShardedOptimizer(SOAP, params, communication_dtype=torch.int8)
    with pytest.raises(ValueError, match="cost"):
        ShardedOptimizer(SOAP, params, cost="time")
    with pytest.raises(ValueError, match="lr"):
        ShardedOptimizer(SOAP, params, lr=-1.0)
    opt = ShardedOptimizer(SOAP, params)
    with pytest.raises(ValueError, match="fixed at construction"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})


def test_lr_schedulers_and_process_group_without_init() -> None:
    torch.manual_seed(0)
    model, ref = Net(), Net()
    ref.load_state_dict(model.state_dict())
    opt = ShardedOptimizer(SOAP, model.parameters(), lr=1e-2)
    ref_opt = SOAP(ref.parameters(), lr=1e-2)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (opt, ref_opt)]
    x, y = _data(9, 16, 16, 4)
    for _ in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            _loss(m, x, y).backward()
            o.step()
        for s in schedules:
            s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 8)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="init_process_group"):
        ShardedOptimizer(SOAP, model.parameters(), process_group=object())
