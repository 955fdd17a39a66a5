"""The search's progress bar and failure streak, without Ray."""

from nas.search_monitor import SearchMonitor
from nas.trials import Trial


def _trial(i: int, state: str = "completed", loss: float = 1.0, error: str | None = None):
    return Trial(
        id=f"t{i}",
        sample={},
        spec_hash="",
        metrics={"val_loss": loss} if state == "completed" else {},
        cost={"latency_ms": 5.0},
        state=state,
        timings={},
        provenance={},
        error=error,
    )


def test_the_same_error_in_a_row_trips_and_anything_else_resets_it():
    m = SearchMonitor(10, ("val_loss", "min"), max_consecutive_failures=3, progress=False)
    m.start([])
    for i, err in enumerate(["A", "A", "B", "B"]):
        m.stored(_trial(i, "failed", error=err))
    assert not m.tripped and m.streak == 2  # a different error starts a new streak
    m.stored(_trial(4, loss=0.5))
    assert m.streak == 0 and m.best == 0.5
    for i in range(3):
        m.stored(_trial(5 + i, "failed", error="B"))
    assert m.tripped and (m.done, m.failed) == (8, 7)
    m.close()


def test_a_resumed_session_counts_the_past_but_starts_a_new_streak():
    past = [_trial(0, loss=0.7), *(_trial(i, "failed", error="A") for i in range(1, 5))]
    m = SearchMonitor(10, ("val_loss", "max"), max_consecutive_failures=3, progress=False)
    m.start(past)
    assert (m.done, m.failed, m.best) == (5, 4, 0.7) and not m.tripped
    m.stored(_trial(5, loss=0.9))
    assert m.best == 0.9  # max: higher is better
    m.close()
