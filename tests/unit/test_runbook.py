"""klviz.ppo.runbook.RunBook: the newest runs are kept to overlay; a running one is never dropped."""

from klviz.ppo.runbook import Run, RunBook


def test_the_run_book_keeps_the_newest_four_runs_and_never_drops_a_running_one():
    class FakeJob:
        def __init__(self, running: bool):
            self.running = running

    book = RunBook(max_runs=4)
    book.add(Run("#1", FakeJob(running=True), "sft", "k1"))
    for i in range(2, 7):
        book.add(Run(f"#{i}", FakeJob(running=False), "sft", "k1"))
    assert list(book.runs) == ["#1", "#4", "#5", "#6"] and book.latest().name == "#6"
