"""The benchmark's peak-window reading: which 5 s window is busiest and who sent its requests (issue 11)."""

from __future__ import annotations

from benchmarks.triggerer_convergence import SimResult, peak_rate, peak_senders, peak_window


def test_peak_window_is_the_busiest_sliding_window_not_the_first() -> None:
    times = [0.0, 1.0, 10.0, 10.5, 11.0, 14.9, 15.0]
    assert peak_window(times, 5.0) == (10.0, 4)  # 15.0 falls outside [10, 15): half-open
    assert peak_rate(times, 5.0) == 4 / 5.0


def test_peak_senders_counts_each_process_inside_the_peak_only() -> None:
    run = SimResult(processes=3, seed=0, horizon=100.0)
    for t, process in [(1.0, 0), (30.0, 2), (30.1, 2), (30.2, 2), (31.0, 1), (34.0, 0), (36.0, 1), (40.0, 0)]:
        run.sent.append(t)
        run.senders.append(process)
    # The busiest window after 20 s starts at 30.0: 0.0 and 40.0 are outside it, 36.0 too.
    assert peak_senders(run, 20.0, 5.0) == [1, 1, 3]
    # Requests before ``start`` are not read.
    assert peak_senders(run, 35.0, 5.0) == [1, 1, 0]
