"""The driver's view of a study: running best in the record's declared direction, one line per trial."""

import io

from hfprune.study.progress import TrialProgress
from hfprune.records.record import TrialRecord


def _record(trial_id: str, loss: float) -> TrialRecord:
    record = TrialRecord(trial_id, "s", trial_id, 0, 0, timings={"retrain_s": 1.5})
    record.add("pruned_train_loss", 2.0, higher_is_better=False)
    record.add("final_test_loss", loss, higher_is_better=False)
    return record


def by_loss(record) -> str:
    return "final_test_loss"


def test_lines_show_each_trial_and_the_best_by_its_declared_direction():
    stream = io.StringIO()
    recorded = [_record("a", 0.5).to_json()]  # resumed: the best so far comes from the store
    progress = TrialProgress(4, recorded, by_loss, "lines", stream)
    progress.finished(_record("b", 0.7))
    progress.finished(_record("c", 0.3))
    progress.finished(_record("d", 0.3))  # a tie is no improvement
    notice, *lines = stream.getvalue().splitlines()
    assert notice == "resuming: 1 of 4 trials already recorded; running the other 3"
    assert [line.split(":")[0] for line in lines] == ["trial 2/4 b", "trial 3/4 c", "trial 4/4 d"]
    assert "best final_test_loss 0.5000 (a)" in lines[0]
    assert "best final_test_loss 0.3000 (c)" in lines[1] and "best final_test_loss 0.3000 (c)" in lines[2]
    assert "final_test_loss 0.7000 in 1.5 s" in lines[0] and lines[2].endswith("ETA 0:00:00")


def test_a_silent_progress_writes_nothing():
    stream = io.StringIO()
    progress = TrialProgress(2, [], by_loss, None, stream)
    progress.finished(_record("a", 0.5))
    progress.close()
    assert stream.getvalue() == ""


def test_the_time_left_follows_the_pace_of_the_last_trials(monkeypatch):
    """Ten quick trials, then the machine slows down tenfold: the estimate follows within ten trials."""
    import hfprune.study.progress as progress_module

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = TrialProgress(100, [], by_loss, None, io.StringIO())
    for step in [1.0] * 10 + [10.0] * 10:
        clock[0] += step
        progress.finished(_record("t", 0.5))
    assert progress.eta().total_seconds() == 10.0 * 80  # 80 left at the last ten trials' 10 s each
