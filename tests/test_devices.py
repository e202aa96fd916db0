"""torchrun ranks time and measure their own GPU, weights load straight to it, the KV cache's
spare capacity is reported apart, the profiler waits for the GPU (issue 19, items 3 and 5).

No GPU here: torch.cuda's functions are replaced by fakes that answer per device, so a call that
forgets its device (and so reads the current one, `cuda:0` unless set) gets another device's value.
"""

from __future__ import annotations

import pytest
import torch

import vh_bench.bench.profile as prof
from methods.vanilla import Vanilla
from tests.conftest import tiny_checkpoint
from tests.stepping import gen_config
from vh_bench import devices
from vh_bench.bench.profile import Stages
from vh_bench.decoding.kv_cache import GrowingLayer
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.decoding.timing import SampleTimer
from vh_bench.models.llava import LlavaAdapter


class FakeCuda:
    """Per-device answers; a call without a device means the current one (cuda:0 until set)."""

    def __init__(self) -> None:
        self.current = torch.device("cuda:0")
        self.calls: list[tuple[str, torch.device]] = []

    def _dev(self, device=None) -> torch.device:
        return self.current if device is None else torch.device(device)

    def set_device(self, device) -> None:
        self.current = torch.device(device)
        self.calls.append(("set_device", self.current))

    def synchronize(self, device=None) -> None:
        self.calls.append(("synchronize", self._dev(device)))

    def max_memory_allocated(self, device=None) -> int:
        return 1000 + self._dev(device).index

    def max_memory_reserved(self, device=None) -> int:
        return 2000 + self._dev(device).index

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeCuda":
        for name in ("set_device", "synchronize", "max_memory_allocated", "max_memory_reserved"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self


def test_bind_sets_the_ranks_device_and_nothing_on_cpu(monkeypatch):
    fake = FakeCuda().install(monkeypatch)
    devices.bind("cpu")
    devices.bind("cuda")  # no index: already the current device (torch's set_device would raise)
    assert fake.calls == []
    devices.bind("cuda:3")
    assert fake.calls == [("set_device", torch.device("cuda:3"))]


def test_timer_synchronises_the_runs_device_three_times(monkeypatch):
    fake = FakeCuda().install(monkeypatch)
    timer = SampleTimer("cuda:2")
    timer.start()
    timer.first_token()
    timer.stop()
    assert fake.calls == [("synchronize", torch.device("cuda:2"))] * 3


def test_peak_memory_reads_the_runs_device(monkeypatch):
    FakeCuda().install(monkeypatch)  # current device stays cuda:0
    assert devices.peak_memory("cuda:1") == {"peak_allocated_bytes": 1001, "peak_reserved_bytes": 2001}


def test_weights_load_straight_to_the_gpu(monkeypatch):
    """On CUDA from_pretrained gets a single-device device_map and nothing moves the model after."""
    from transformers import LlavaForConditionalGeneration

    real = LlavaForConditionalGeneration.from_pretrained.__func__
    seen: list[dict] = []

    def fake_from_pretrained(cls, path, **kwargs):
        seen.append(dict(kwargs))
        kwargs.pop("device_map", None)  # no GPU here: load on the CPU instead
        model = real(cls, path, **kwargs)
        monkeypatch.setattr(model, "to", lambda *a, **k: pytest.fail(f"model.to{a} after a device_map load"))
        return model

    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", classmethod(fake_from_pretrained))
    LlavaAdapter.load(tiny_checkpoint(), device="cuda:1")
    assert seen[-1]["device_map"] == {"": "cuda:1"}
    monkeypatch.undo()
    assert devices.load_kwargs("cpu") == {}  # the CPU path is unchanged: built in host memory, .to("cpu")


def test_profiler_charges_gpu_work_to_the_stage_that_queued_it(monkeypatch):
    clock = {"now": 0.0, "queued": 0.0}
    monkeypatch.setattr(prof.time, "perf_counter", lambda: clock["now"])

    def sync() -> None:  # waits for the queued GPU work
        clock["now"] += clock["queued"]
        clock["queued"] = 0.0

    st = Stages(sync=sync)

    def forward() -> None:  # returns at once, its kernels still running
        clock["queued"] += 3.0

    def loop() -> None:
        clock["now"] += 0.5
        st.wrap("forward.decode", forward)()

    st.wrap("decode.loop", loop)()
    assert st.seconds == {"forward.decode": 3.0, "decode.loop": 0.5}


def test_kv_cache_used_and_reserved_bytes(tiny_adapter, inputs):
    out = Vanilla().generate(tiny_adapter, inputs, gen_config("greedy", n=6), SampleSeeds(0, "s0"))
    text = tiny_adapter.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    positions = inputs.length + out.n_new_tokens - 1  # the last token is chosen, never fed
    # keys + values, every layer, one row, float32: counted from the config, not from the cache
    used = 2 * text.num_hidden_layers * text.num_key_value_heads * positions * head_dim * 4
    kv = out.kv_cache
    assert kv.used_bytes == used
    assert used < kv.reserved_bytes <= GrowingLayer.GROWTH * used + 2 * text.num_hidden_layers * text.num_key_value_heads * GrowingLayer.MIN_HEADROOM * head_dim * 4
    assert kv.slack_bytes == kv.reserved_bytes - used
