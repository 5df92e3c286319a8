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
