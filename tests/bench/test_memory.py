"""Peak-memory accounting of the bench (CPU: torch allocator events)."""

from __future__ import annotations

import torch

from vh_bench.bench.memory import cpu_working_peak, measure_peak, module_bytes, peak_from_events, reachable_modules, tensor_bytes


def test_peak_of_running_sum_in_time_order() -> None:
    # (time, bytes): +100 +50 -100 +30 → running 100, 150, 50, 80: peak 150, whatever the list order.
    events = [(3, -100), (1, 100), (4, 30), (2, 50)]
    assert peak_from_events(events) == 150
    # A free and an allocation at the same instant: allocation first (never underestimates).
    assert peak_from_events([(1, 10), (2, -10), (2, 10)]) == 20
    assert peak_from_events([]) == 0


def test_cpu_peak_counts_live_torch_allocations_exactly() -> None:
    def work():
        a = torch.empty(1000)  # 4000 B
        b = torch.empty(2000)  # 8000 B: 12000 live
        del a
        c = torch.empty(500)  # 2000 B: 10000 live
        return b, c

    assert cpu_working_peak(work) == 12000


def test_allocations_before_the_window_are_resident_not_working() -> None:
    big = torch.empty(10_000)  # allocated before: freeing it inside must not lower the peak below 0

    def work():
        nonlocal big
        del big
        return torch.empty(100)

    m = measure_peak(work, torch.device("cpu"), resident_bytes=123)
    assert (m.working_bytes, m.resident_bytes, m.peak_bytes) == (400, 123, 523)


def test_resident_bytes_count_shared_storage_once() -> None:
    lin = torch.nn.Linear(4, 3)  # 12 + 3 floats
    assert module_bytes(lin) == 15 * 4
    t = torch.zeros(10)
    assert tensor_bytes([t, t[2:], t.view(2, 5)]) == 40


def test_modules_a_method_holds_count_as_its_resident_memory() -> None:
    class Wrapper:
        def __init__(self, model: torch.nn.Module) -> None:
            self.model = model

    class FakeHalc:
        def __init__(self) -> None:
            self.detector = Wrapper(torch.nn.Linear(2, 2))
            self.scorers = {"blip": torch.nn.Linear(3, 1)}
            self.loop = self  # cycles are fine
            self.name = "halc"

    found = reachable_modules(FakeHalc())
    assert sorted(type(m).__name__ + str(m.in_features) for m in found) == ["Linear2", "Linear3"]
    assert reachable_modules(object()) == []
