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


def test_a_figure_is_rebuilt_when_its_key_changes_but_at_most_once_per_interval():
    book, clock, builds = RunBook(), [0.0], []

    def build():
        builds.append(clock[0])
        return f"figure {len(builds)}"

    get = lambda key, every_s=2.0: book.figure("curves", key, build, every_s, now=lambda: clock[0])  # noqa: E731
    assert get(1) == "figure 1"
    clock[0] = 0.5
    assert get(1) == "figure 1" and get(2) == "figure 1"  # same key: cached; new key within 2 s: still the old one
    clock[0] = 2.1
    assert get(2) == "figure 2" and get(2) == "figure 2"  # the interval passed: the new key is drawn, once
    clock[0] = 2.2
    assert get(3, every_s=0.0) == "figure 3"  # the run ended: its last figure is drawn at once
    assert builds == [0.0, 2.1, 2.2]
