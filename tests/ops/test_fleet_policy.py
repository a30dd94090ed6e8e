"""The fleet's restart policy and supervisor logic, with a fake clock and fake processes."""

from __future__ import annotations

import signal

import pytest
from rich.console import Console

from sinkfleet.errors import ConfigError
from sinkfleet.ops.fleet.supervisor import (
    RestartPolicy,
    Slot,
    Supervisor,
    describe_exit,
    fleet_table,
)


def crash_loop(policy: RestartPolicy, crash_after: float) -> list[tuple[float, float | None]]:
    """Workers that crash ``crash_after`` seconds after each start: (exit time, delay)."""
    now, out = 0.0, []
    while len(out) < 50:
        d = policy.on_unexpected_exit(now, uptime=crash_after)
        out.append((now, d.delay if d.restart else None))
        if not d.restart:
            return out
        now += d.delay + crash_after
    return out


def test_back_off_doubles_from_one_second_and_is_capped_at_30() -> None:
    policy = RestartPolicy(max_restarts=100, window=60)
    delays = [delay for _, delay in crash_loop(policy, crash_after=0.5)][:8]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_more_than_five_restarts_in_sixty_seconds_gives_up() -> None:
    policy = RestartPolicy()  # 5 in 60 s
    history = crash_loop(policy, crash_after=0.0)
    assert [d for _, d in history] == [1, 2, 4, 8, 16, None]  # the 6th restart is refused
    assert history[-1][0] == 31  # a worker crashing at once is given up after 31 s
    assert "5 restarts in the last 60s (limit 5)" in policy.on_unexpected_exit(31, 0).reason


def test_slow_crash_loops_keep_retrying_at_the_cap() -> None:
    # A worker that dies 20 s after each start never has 6 restarts within 60 s.
    history = crash_loop(RestartPolicy(), crash_after=20)
    assert len(history) == 50 and all(d is not None for _, d in history)
    assert history[-1][1] == 30


def test_window_slides() -> None:
    policy = RestartPolicy(max_restarts=2, window=10, base_delay=0)
    assert policy.on_unexpected_exit(0, 0).restart
    assert policy.on_unexpected_exit(1, 0).restart
    assert not policy.on_unexpected_exit(2, 0).restart
    assert policy.recent_restarts(10) == 1  # the restart at t=0 left the window
    assert policy.on_unexpected_exit(10, 0).restart


def test_back_off_resets_after_a_stable_run() -> None:
    policy = RestartPolicy(max_restarts=100)
    assert [policy.on_unexpected_exit(t, 0).delay for t in (0, 1, 3)] == [1, 2, 4]
    assert policy.on_unexpected_exit(200, uptime=120).delay == 1  # ran 120 s: start over
    assert policy.on_unexpected_exit(202, uptime=1).delay == 2


def test_zero_max_restarts_never_restarts() -> None:
    assert not RestartPolicy(max_restarts=0).on_unexpected_exit(0, 0).restart


@pytest.mark.parametrize("kwargs", [{"max_restarts": -1}, {"window": 0},
                                    {"base_delay": 5, "max_delay": 1}])
def test_bad_settings_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited 0"
    assert describe_exit(3) == "exited 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


# --- the supervisor, with fake processes --------------------------------------------------
class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None
        self.signals: list[int] = []
        self.exit_on_term: int | None = 0  # None: ignore SIGTERM

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGTERM and self.exit_on_term is not None:
            self.code = self.exit_on_term

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)
        self.code = -signal.SIGKILL


class FakeLauncher:
    def __init__(self) -> None:
        self.procs: list[FakeProc] = []
        self.reaped_codes: list[tuple[int, int]] = []

    def launch(self, slot: Slot) -> FakeProc:
        proc = FakeProc(1000 + len(self.procs))
        self.procs.append(proc)
        return proc

    def reaped(self, slot: Slot, code: int) -> None:
        self.reaped_codes.append((slot.index, code))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(n: int = 2, **policy: float) -> tuple[Supervisor, FakeLauncher, Clock, list[str]]:
    launcher, clock, said = FakeLauncher(), Clock(), []
    slots = [Slot(i, 9301 + i, RestartPolicy(**policy)) for i in range(n)]  # type: ignore[arg-type]
    sup = Supervisor(slots, launcher, clock, lambda m, level: said.append(f"{level}: {m}"),
                     stop_timeout=60)
    sup.start()
    return sup, launcher, clock, said


def test_a_killed_worker_is_restarted_after_the_back_off() -> None:
    sup, launcher, clock, said = make()
    assert [s.pid for s in sup.slots] == [1000, 1001]
    launcher.procs[0].code = -signal.SIGKILL
    clock.now = 5
    sup.step()
    assert sup.slots[0].state == "backoff" and sup.slots[0].pid is None
    assert launcher.reaped_codes == [(0, -9)]
    clock.now = 5.5
    sup.step()
    assert sup.slots[0].state == "backoff"
    clock.now = 6
    sup.step()
    assert sup.slots[0].state == "running" and sup.slots[0].pid == 1002
    assert sup.slots[0].restarts == 1 and sup.slots[0].pids == [1000, 1002]
    assert any("killed by SIGKILL" in line for line in said)


def test_a_clean_exit_is_not_restarted_and_the_fleet_ends_when_all_stopped() -> None:
    sup, launcher, _clock, _ = make()
    launcher.procs[0].code = 0
    sup.step()
    assert sup.slots[0].state == "stopped" and not sup.done
    launcher.procs[1].code = 0
    sup.step()
    assert sup.done and sup.exit_code == 0 and len(launcher.procs) == 2


def test_a_crash_looping_slot_gives_up_loudly_and_the_fleet_exits_1_when_all_did() -> None:
    sup, launcher, clock, said = make(n=1, max_restarts=2, window=60)
    for _ in range(3):
        launcher.procs[-1].code = 1
        sup.step()
        clock.now += 10
        sup.step()
    assert sup.slots[0].state == "gave up" and sup.done and sup.exit_code == 1
    assert len(launcher.procs) == 3
    assert any(line.startswith("error: slot 0: GAVE UP") for line in said)
    assert "error: every slot gave up: the fleet exits 1" in said


def test_one_slot_giving_up_keeps_the_others_running() -> None:
    sup, launcher, _clock, _ = make(n=2, max_restarts=0)
    launcher.procs[0].code = 1
    sup.step()
    assert sup.slots[0].state == "gave up" and sup.slots[1].state == "running"
    assert not sup.done
    sup.stop()
    sup.step()
    assert sup.done and sup.exit_code == 1  # a slot gave up: not a clean run


def test_stop_sends_sigterm_and_exits_0_when_all_exit_0() -> None:
    sup, launcher, clock, _ = make()
    launcher.procs[1].code = 1  # crashed: in back-off when the stop comes
    sup.step()
    sup.stop()
    assert launcher.procs[0].signals == [signal.SIGTERM]
    sup.step()
    assert sup.done and sup.exit_code == 0
    assert [s.state for s in sup.slots] == ["stopped", "stopped"]
    clock.now = 100
    sup.step()
    assert len(launcher.procs) == 2  # no restart after the stop


def test_stop_kills_after_the_timeout_and_exits_1() -> None:
    sup, launcher, clock, _ = make()
    launcher.procs[0].exit_on_term = None  # stuck
    sup.stop()
    sup.step()
    assert not sup.done
    clock.now = 59
    sup.step()
    assert launcher.procs[0].signals == [signal.SIGTERM]
    clock.now = 60
    sup.step()
    assert launcher.procs[0].signals == [signal.SIGTERM, signal.SIGKILL]
    sup.step()
    assert sup.done and sup.exit_code == 1


def test_a_second_stop_kills_at_once() -> None:
    sup, launcher, _clock, _ = make(n=1)
    launcher.procs[0].exit_on_term = None
    sup.stop()
    sup.stop()
    sup.step()
    assert sup.done and sup.slots[0].last_exit == -signal.SIGKILL


def test_launch_failure_counts_as_a_crash() -> None:
    class Failing(FakeLauncher):
        def launch(self, slot: Slot) -> FakeProc:
            raise OSError("no such interpreter")

    said: list[str] = []
    slot = Slot(0, None, RestartPolicy(max_restarts=1))
    sup = Supervisor([slot], Failing(), Clock(), lambda m, level: said.append(m))
    sup.start()
    assert slot.state == "backoff"
    sup.slots[0].restart_at = 0
    sup.step()
    assert slot.state == "gave up" and sup.exit_code == 1


def test_table_shows_every_slot() -> None:
    sup, launcher, clock, _ = make()
    launcher.procs[1].code = -signal.SIGKILL
    sup.step()
    clock.now = 0.4
    console = Console(width=120, record=True)
    console.print(fleet_table("events", sup.slots, clock.now))
    text = console.export_text()
    assert "1000" in text and "running" in text and "backoff (1s)" in text
    assert "9301" in text and "9302" in text and "killed by SIGKILL" in text
