"""The launch-count bench: what DispatchCounter counts (hand-counted programs), phases, custom kernels
and host syncs in real generations on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from methods.vanilla import Vanilla
from methods.vasparse import VASparse
from tests.stepping import gen_config
from vh_bench.bench.launch_count import DispatchCounter, count_generation
from vh_bench.bench.launches import launches_markdown, parse_entry, run_launch_bench
from vh_bench.decoding.launches import CustomKernel
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError


def counted(fn, seeds=()):
    counter = DispatchCounter(list(seeds), torch.device("cpu"))
    counter.phase = "step"
    with torch.inference_mode(), counter:
        fn()
    return counter.counts["step"]


def test_views_aliases_and_allocations_launch_nothing():
    a, b = torch.randn(4, 3), torch.randn(4, 3)

    def program():
        x = a + b  # 1
        y = x.t()  # view
        z = y.contiguous()  # a copy: y is transposed → 1
        z.contiguous()  # already contiguous: returns itself
        w = torch.softmax(z, 0)  # 1 (a composite counts once)
        w[1:].reshape(-1)  # slice: view; reshape of a contiguous slice: view
        torch.empty(5)  # allocation
        w.float()  # already float32: the same tensor
        w.double()  # a conversion → 1
        x.sum()  # 1

    c = counted(program)
    assert dict(c.ops) == {"add": 1, "contiguous": 1, "softmax": 1, "to": 1, "sum": 1}
    assert c.kernels == 5


def test_host_syncs_are_reads_of_device_values_only():
    weight = torch.randn(6)

    def program():
        h = weight * 2  # device-valued (from a weight)
        float(h.sum())  # sync 1
        h.tolist()  # sync 2
        (h > 0).nonzero()  # sync 3 (data-dependent shape)
        bool((h > 100).any())  # sync 4
        positions = torch.arange(6)  # host-built
        int(positions[-1]) - int(positions[0])  # no sync: host data
        positions.tolist()  # no sync

    c = counted(program, seeds=[weight])
    assert c.syncs == 4, dict(c.sync_ops)
    assert c.sync_ops["tolist"] == 1 and c.sync_ops["nonzero"] == 1


def test_custom_kernels_count_once_and_hide_their_inner_calls():
    a = torch.randn(8)
    k = CustomKernel("fused")

    def program():
        with k:
            (a * 2 + 1).sum()  # inside the kernel: not dispatcher kernels of the method
        a + 1

    c = counted(program)
    assert (c.custom, c.kernels, dict(c.custom_ops)) == (1, 1, {"fused": 1})
    with k:  # no counter installed: a no-op
        pass


class SyncingVanilla(Vanilla):
    """Vanilla whose stepper reads a device value every step (what the bench must flag)."""

    def stepper(self, adapter, inputs, seeds):
        inner = super().stepper(adapter, inputs, seeds)
        step = inner.step

        def syncing_step(tokens):
            z = step(tokens)
            float(z.max())
            return z

        inner.step = syncing_step
        return inner


def test_generations_phases_custom_kernels_and_syncs(tiny_adapter, inputs):
    gen = gen_config("greedy", n=5)
    seeds = SampleSeeds(0, "x")
    van, out = count_generation(Vanilla(), tiny_adapter, inputs, gen, seeds)
    assert van.counts["prefill"].calls == 1 and van.counts["step"].calls == out.n_new_tokens - 1 == 4
    assert van.counts["step"].syncs == 0 and van.counts["step"].custom == 0
    assert van.counts["select"].syncs >= out.n_new_tokens  # the loop reads every chosen token
    syncing, _ = count_generation(SyncingVanilla(), tiny_adapter, inputs, gen, seeds)
    assert syncing.counts["step"].syncs == 4
    # The fused CPU kernel: one call per VASparse layer (all 4) and step, its inner calls hidden.
    fused, _ = count_generation(VASparse(kernel="cpu"), tiny_adapter, inputs, gen, seeds)
    step = fused.counts["step"]
    assert step.custom == 4 * 4 and dict(step.custom_ops) == {"vasparse_cpu": 16}
    assert step.syncs == 0
    ref, _ = count_generation(VASparse(kernel="torch"), tiny_adapter, inputs, gen, seeds)
    assert ref.counts["step"].custom == 0 and ref.counts["step"].kernels > step.kernels + step.custom


def test_parse_entry():
    assert parse_entry("vasparse+kernel=triton+lam=0") == ("vasparse", ["method.kernel=triton", "method.lam=0"])
    assert parse_entry("vanilla") == ("vanilla", [])
    with pytest.raises(ConfigError):
        parse_entry("vasparse+kernel")


@pytest.mark.slow
def test_the_command_writes_its_table(tmp_path):
    res = run_launch_bench(
        ["method=vanilla,vasparse+kernel=cpu,vasparse+kernel=triton", "model=tiny", "generation.max_new_tokens=4"],
        out_dir=tmp_path,
    )
    rows = json.loads((tmp_path / "launches.json").read_text())["methods"]
    assert set(rows) == {"vanilla", "vasparse+kernel=cpu", "vasparse+kernel=triton"}
    assert rows["vanilla"]["launches_per_step_ratio"] == 1.0
    tri = rows["vasparse+kernel=triton"]
    assert tri["implementation"] == {"vasparse_kernel": "triton"}
    assert tri["custom_per_step"] == 4  # one launch per VASparse layer and step
    assert tri["launches_per_layer"] == pytest.approx(tri["launches_per_step"] / 4)
    assert tri["launches_per_step"] < rows["vasparse+kernel=cpu"]["launches_per_step"]  # no accumulator growth
    md = (tmp_path / "launches.md").read_text()
    assert md.strip() == launches_markdown(res).strip() and "| vasparse+kernel=triton |" in md
