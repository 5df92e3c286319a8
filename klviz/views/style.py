"""Names, colours and texts the plotly figures (klviz.views.plots) and the static first-paint chart
(klviz.views.svg) share: one definition each. It imports nothing, so the static chart needs no plotly.

Every KL label states its direction: KL(policy || SFT) = sum_v p log(p/q) (InstructGPT's penalty),
KL(SFT || policy) = sum_v q log(q/p).
"""

KL_REVERSE = "KL(policy || SFT)"
KL_FORWARD = "KL(SFT || policy)"
GAINED_COLOR = "#d6604d"  # mass the policy gained (p > q); punished by KL(policy || SFT)
LOST_COLOR = "#4393c3"  # mass the policy lost (q > p); punished by KL(SFT || policy)

MASS_MOVED_TITLE = "Where the probability mass moved, by SFT probability q(v)"
MASS_MOVED_SUBTITLE = (f"→ mass gained on tokens the SFT model found unlikely: what {KL_REVERSE} punishes · "
                       f"← mass lost on tokens it found likely: what {KL_FORWARD} punishes")
GAINED_NAME = f"mass gained (p > q): what {KL_REVERSE} punishes where q is small"
LOST_NAME = f"mass lost (q > p): what {KL_FORWARD} punishes where p became small"
MASS_MOVED_X_TITLE = "← mass lost per token · mass gained per token →"
BAND_AXIS_TITLE = "SFT probability band of q(v)"


def mass_axis_top(gained, lost) -> float:
    """The mass-moved chart's x axis runs over [-1.1 top, 1.1 top] with top the largest mass gained or lost
    (1.0 with no bands)."""
    gained, lost = [float(v) for v in gained], [float(v) for v in lost]
    return max(max(gained, default=0.0), max(lost, default=0.0), 1e-12) if gained else 1.0


RUN_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")  # Live PPO's overlaid runs, in order
MAX_RUNS = len(RUN_COLORS)
PPO_CURVES_TITLE = "Live PPO"
PPO_NATS = "nats per sequence"  # the trainer's KL metrics: summed over a response's tokens, averaged over the batch


def ppo_panels(estimator_key: str | None) -> tuple:
    """Live PPO's curves, four panels row by row (top left, top right, bottom left, bottom right), each
    (title lines, y-axis title or None, ((metric key, dashed), ...)): reward, exact KL(policy || SFT) with
    KL(SFT || policy) dashed, the chosen estimator's estimate of KL(policy || SFT) (no curve without one),
    and the coefficient beta. Short two-line titles: in Live PPO's column at 1280 px one-line titles ran
    into each other (issue 15)."""
    est = (f"{estimator_key} estimate", f"of {KL_REVERSE}") if estimator_key else ("estimate (none chosen)",)
    return ((("reward", "mean per response"), "reward", (("reward_mean", False),)),
            ((f"exact {KL_REVERSE}", f"(dashed: {KL_FORWARD})"), PPO_NATS, (("kl_reverse", False), ("kl_forward", True))),
            (est, PPO_NATS, ((estimator_key, False),) if estimator_key else ()),
            (("KL coefficient beta",), None, (("kl_coef", False),)))


def ppo_series(metrics: list[dict], key: str) -> tuple[list, list[float]]:
    """(steps, values) of one metric over a run's metrics rows; a step without it is NaN (a gap)."""
    steps = [m.get("step", i) for i, m in enumerate(metrics)]
    return steps, [float(m[key]) if m.get(key) is not None else float("nan") for m in metrics]
