"""The status-poll token bucket, on an injected clock whose sleep advances it (no wall-clock waits)."""

from __future__ import annotations

import asyncio

import pytest
from virtual_time import VirtualTimeLoop, max_in_window, run_virtual

from airflow_provider_baseten.hooks.baseten import shared_status_bucket
from airflow_provider_baseten.hooks.connection import ClientSettings
from airflow_provider_baseten.hooks.ratelimit import (
    AIM,
    DECREASE,
    FORGET_S,
    PROBE_S,
    RECOVERY_S,
    USED_WINDOW_S,
    AsyncTokenBucket,
    TokenBucket,
    status_burst,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sync_sleep(seconds)

    def sync_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def bucket(clock: FakeClock, rate: float, burst: float | None = None) -> AsyncTokenBucket:
    return AsyncTokenBucket(rate, burst, clock=clock, sleep=clock.sleep)


async def test_burst_passes_without_waiting(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=3)
    for _ in range(3):
        await b.acquire()
    assert clock.sleeps == []


async def test_beyond_the_burst_waits_for_one_token(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=2)
    for _ in range(3):
        await b.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]


async def test_sustained_rate(clock: FakeClock) -> None:
    b = bucket(clock, rate=20)
    start = clock.now
    for _ in range(20 + 40):
        await b.acquire()
    assert clock.now - start == pytest.approx(2.0)  # 20 burst, then 40 tokens at 20/s


async def test_the_record_of_grants_keeps_only_the_used_window(clock: FakeClock) -> None:
    """A triggerer's budget lives for weeks: it must not remember every token it ever handed out."""
    b = bucket(clock, rate=20)
    for _ in range(20 * 60):  # a minute at the full rate
        await b.acquire()
    assert len(b._grants) <= 20 * (USED_WINDOW_S + 1)


async def test_idle_time_refills_up_to_the_burst_only(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=2)
    await b.acquire()
    await b.acquire()
    clock.now += 60
    for _ in range(2):
        await b.acquire()
    assert clock.sleeps == []
    await b.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]


def test_default_burst_is_the_rate_and_at_least_one(clock: FakeClock) -> None:
    assert bucket(clock, rate=15).burst == 15
    assert bucket(clock, rate=0.5).burst == 1


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(clock: FakeClock, rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        bucket(clock, rate=rate)


def test_concurrent_waiters_are_all_served_at_the_rate() -> None:
    order: list[tuple[int, float]] = []

    async def main(loop: VirtualTimeLoop) -> None:
        b = AsyncTokenBucket(10, burst=1, clock=loop.time)

        async def poll(i: int) -> None:
            await b.acquire()
            order.append((i, loop.time()))

        await asyncio.gather(*(poll(i) for i in range(5)))

    run_virtual(main)
    assert [i for i, _ in order] == [0, 1, 2, 3, 4]  # arrival order: nobody starves
    assert [t for _, t in order] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_shared_status_bucket_is_per_settings_and_uses_their_rate() -> None:
    a = ClientSettings(api_key="k1", status_rate_limit=7)
    assert shared_status_bucket(a) is shared_status_bucket(ClientSettings(api_key="k1", status_rate_limit=7))
    assert shared_status_bucket(a).rate == 7
    assert shared_status_bucket(a) is not shared_status_bucket(ClientSettings(api_key="k2", status_rate_limit=7))


# --- adapting to 429s (AIMD) -----------------------------------------------------------------------------------


def test_a_429_halves_the_rate_climbs_back_below_it_and_stays_until_the_quiet_hour(clock: FakeClock) -> None:
    b = bucket(clock, rate=15)
    start = clock.now
    b.rate_limited(None, sent_at=clock.now)
    assert b.rate == pytest.approx(7.5)
    clock.now += 3
    assert b.rate == pytest.approx(7.5 + 3 * 15 / RECOVERY_S)  # the additive climb ...
    clock.now += 10
    assert b.rate == pytest.approx(AIM * 15)  # ... stops below the rate the 429 came at
    for minutes in (5, 6, 30, 59):
        clock.now = start + 60 * minutes
        assert b.rate == pytest.approx(AIM * 15)  # and stays there: no probe towards the limit, no 429 it brings
    clock.now = start + FORGET_S + 10
    assert b.rate == pytest.approx(AIM * 15 + 10 * 15 / PROBE_S)  # after the quiet hour it probes, slowly
    clock.now += 10 * PROBE_S
    assert b.rate == 15  # never above the configured rate


def test_a_later_429_lowers_the_aim_and_restarts_the_quiet_hour(clock: FakeClock) -> None:
    b = bucket(clock, rate=15)
    b.rate_limited(None, sent_at=clock.now)
    clock.now += 600
    assert b.rate == pytest.approx(AIM * 15)
    b.rate_limited(None, sent_at=clock.now)  # the limit again (a peer grew): a new, lower ceiling
    second = clock.now
    clock.now += FORGET_S - 1
    assert b.rate == pytest.approx(AIM**2 * 15)
    clock.now = second + FORGET_S + 10
    assert b.rate > AIM**2 * 15


async def test_a_process_polling_below_its_budget_aims_at_what_it_used(clock: FakeClock) -> None:
    b = bucket(clock, rate=15)
    for _ in range(4 * 12):  # 4 polls a second for 12 s, well under the budget of 15
        await b.acquire()
        clock.now += 0.25
    b.rate_limited(None, sent_at=clock.now - 0.1)
    assert b.rate == pytest.approx(4 * DECREASE, rel=0.15)
    clock.now += 60
    assert b.rate == pytest.approx(4 * AIM, rel=0.15)


def test_429s_of_one_round_shrink_the_rate_once(clock: FakeClock) -> None:
    b = bucket(clock, rate=16)
    sent = clock.now
    clock.now += 0.2
    for _ in range(10):  # ten requests sent before the first 429 came back
        b.rate_limited(None, sent_at=sent)
    assert b.rate == pytest.approx(8)
    clock.now += 0.01
    b.rate_limited(None, sent_at=clock.now)  # sent after the decrease: the new rate is too high as well
    assert b.rate == pytest.approx(4, rel=0.01)


def test_the_rate_has_a_floor(clock: FakeClock) -> None:
    b = bucket(clock, rate=16)
    for _ in range(20):
        clock.now += 0.001
        b.rate_limited(None, sent_at=clock.now)
    assert b.rate == pytest.approx(1.0)


async def test_no_token_before_retry_after_passes(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=5)
    start = clock.now
    b.rate_limited(2.0, sent_at=start)
    first, second = await b.acquire(), await b.acquire()
    assert first - start == pytest.approx(2.0)
    assert second - start == pytest.approx(2.0 + 1 / 5)  # no burst after a 429: the next at the halved rate


def test_waiters_queued_before_a_429_queue_again_behind_it() -> None:
    granted: list[float] = []

    async def main(loop: VirtualTimeLoop) -> None:
        b = AsyncTokenBucket(10, burst=1, clock=loop.time)

        async def poll() -> None:
            granted.append(await b.acquire())

        waiters = [asyncio.ensure_future(poll()) for _ in range(4)]  # slots at 0, 0.1, 0.2, 0.3
        await asyncio.sleep(0.05)
        b.rate_limited(1.0, sent_at=0.0)  # the first request met a 429 with Retry-After: 1
        await asyncio.gather(*waiters)

    run_virtual(main)
    assert granted[0] == 0.0
    assert min(granted[1:]) >= 1.05  # nobody was let through during the block


def test_sync_twin_blocks_on_its_sleep_and_shares_the_arithmetic(clock: FakeClock) -> None:
    b = TokenBucket(10, burst=1, clock=clock, sleep=clock.sync_sleep)
    b.acquire()
    b.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]
    b.rate_limited(3.0, sent_at=clock.now)
    b.acquire()
    assert clock.sleeps[-1] == pytest.approx(3.0 + 1 / 5)  # the block, then a token at the halved rate


def test_sync_twin_is_shared_by_threads_at_the_rate() -> None:
    import threading

    now = [0.0]
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        pass

    b = TokenBucket(10, burst=1, clock=lambda: now[0], sleep=sleep)
    waits: list[float] = []

    def worker() -> None:
        for _ in range(5):
            wait, _generation = b._reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 20 reservations on a frozen clock: each slot handed out once, 0.1 s apart.
    assert sorted(waits) == pytest.approx([i / 10 for i in range(20)])


def test_three_processes_on_one_key_converge_under_the_limit() -> None:
    """Three triggerers (three budgets, no coordination) against a 20 req/s limit, each with more demand than it."""
    limit, window, retry_after = 20, 1.0, 1.0
    accepted: list[float] = []
    sent: list[float] = []
    rejected: list[float] = []

    async def main(loop: VirtualTimeLoop) -> None:
        budgets = [AsyncTokenBucket(15, burst=3, clock=loop.time) for _ in range(3)]

        def server(now: float) -> bool:
            recent = [t for t in accepted[-limit:] if t > now - window]
            if len(recent) >= limit:
                rejected.append(now)
                return False
            accepted.append(now)
            return True

        async def poller(budget: AsyncTokenBucket) -> None:
            while loop.time() < 180:
                granted = await budget.acquire()
                sent.append(loop.time())
                await asyncio.sleep(0.01)  # the round trip
                if not server(granted):
                    budget.rate_limited(retry_after, sent_at=granted)
                await asyncio.sleep(1.0)

        await asyncio.gather(*(poller(budget) for budget in budgets for _ in range(40)))

    run_virtual(main)
    converged = [t for t in sent if t >= 60]
    per_5s = max_in_window(converged, 5.0)
    assert per_5s <= 5 * limit  # aggregate at most 20 req/s over every 5 s window
    assert per_5s >= 5 * limit * 0.5  # and the budgets did not collapse
    late_429s = [t for t in rejected if t >= 60]
    assert len(late_429s) <= 0.05 * len(converged)


def test_three_processes_stay_under_a_bursting_limit_once_converged() -> None:
    """The emulator's own limit (a 20-token bucket: a probe above it is answered 429 only once the burst is spent)
    against three budgets whose triggers arrive over 30 s, as tasks defer: after the first 429s every 5 s window,
    429s included, stays at or under 20 req/s for as long as the budgets hold (``HOLD_S``)."""
    from airflow_provider_baseten.emulator.limits import RouteBucket

    sent: list[float] = []
    rejected: list[float] = []
    end = 180.0

    async def main(loop: VirtualTimeLoop) -> None:
        limit = RouteBucket(20, 20, clock=loop.time)
        budgets = [AsyncTokenBucket(15, burst=status_burst(15), clock=loop.time) for _ in range(3)]

        async def trigger(i: int) -> None:
            budget = budgets[i % 3]
            await asyncio.sleep(30 * i / 150)
            while loop.time() < end:
                granted = await budget.acquire()
                await asyncio.sleep(0.005 + 0.01 * (i % 7) / 7)  # the round trip
                sent.append(loop.time())
                wait = limit.try_acquire()
                if wait:
                    rejected.append(loop.time())
                    budget.rate_limited(1.0, sent_at=granted)  # Retry-After: 1, as the emulator answers
                    await asyncio.sleep(1.0)
                    continue
                await asyncio.sleep(1.0)  # poll_interval

        await asyncio.gather(*(trigger(i) for i in range(150)))

    run_virtual(main)
    assert rejected, "the limit was never reached: the test proves nothing"
    converged = max(rejected) + 1
    assert converged < 100, f"the budgets took {converged:.0f} s to converge"
    late = [t for t in sent if converged <= t < end]
    peak = max_in_window(late, 5.0) / 5
    assert peak <= 20, f"{peak} req/s over 5 s"  # aggregate at most 20 req/s over every 5 s window (429s too)
    assert len(late) / (end - converged) >= 0.65 * 20  # and the budgets did not collapse


@pytest.mark.parametrize("spread", [(12, 12, 12), (2, 12, 22)])
def test_three_budgets_stop_meeting_the_limit_once_converged(spread: tuple[int, ...]) -> None:
    """Three budgets on one simulated key (the emulator's 20-token limit, the hook's 429 retry; the benchmark's
    simulation), 25 minutes, 8 seeds, the even spread and the uneven one the red system-test run had: past the first
    two minutes no budget probes back into the limit, so 429s and the 21-22 req/s 5 s windows of each probe stop
    (a probe after a 5-minute hold, stopped at 0.85 x the ceiling, met it in most seeds: 8-10 x 429s, 5-8 seeds
    over 20)."""
    from statistics import median

    from benchmarks.triggerer_convergence import peak_rate, simulate

    runs = [simulate(processes=3, triggers=spread, seed=seed, horizon=1500) for seed in range(8)]
    assert all(run.throttled for run in runs), "the limit was never reached: the test proves nothing"
    late = [run.after(120) for run in runs]
    assert sum(len(throttled) for _, throttled in late) <= 1, [len(throttled) for _, throttled in late]
    peaks = [peak_rate(sent) for sent, _ in late]
    assert sum(peak > 20 for peak in peaks) <= 2, peaks  # seeds left over: a peer that never met a 429 (docstring)
    assert median(len(sent) / (1500 - 120) for sent, _ in late) >= 0.8 * 20  # and the budgets did not collapse
