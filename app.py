"""klviz dashboard: how an RLHF policy drifted from its SFT model. Run: `streamlit run app.py`.

The frame only: page config, the shared sidebar (which pair is loaded, the sampling settings) and
st.navigation over the thin pages in pages/.
"""

from pathlib import Path

from klviz.threads import apply_thread_settings

# Before torch loads: idle OpenMP workers sleep instead of spinning, which on a busy machine starved
# the threads doing the work (bench/RESULTS.md); the CLI applies the same settings (klviz.threads).
apply_thread_settings()

import streamlit as st  # noqa: E402

from klviz.app import first_view  # noqa: E402

HERE = Path(__file__).resolve().parent

# An emoji, not ":material/...": Streamlit's frontend turns a material page icon into a favicon URL on
# fonts.gstatic.com (fetched on every load), an emoji into an inline SVG data URL (nothing fetched).
st.set_page_config(page_title="klviz", page_icon="🔀", layout="wide")


def _kl_lab_missing() -> None:
    st.title("KL lab")
    st.info("The KL lab page (pages/kl_lab.py) is not installed in this checkout.")


kl_lab = HERE / "pages" / "kl_lab.py"
pages = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/token_inspector.py", title="Token inspector", icon=":material/text_fields:"),
    st.Page("pages/mass_shift.py", title="Mass shift", icon=":material/swap_vert:"),
    st.Page("pages/trajectory.py", title="Trajectory", icon=":material/timeline:"),
    st.Page("pages/where_rl_acted.py", title="Where RL acted", icon=":material/my_location:"),
    st.Page("pages/live_ppo.py", title="Live PPO", icon=":material/model_training:"),
    st.Page("pages/kl_lab.py" if kl_lab.exists() else _kl_lab_missing, title="KL lab",
            icon=":material/science:", url_path="kl_lab"),
]
page = st.navigation(pages)
first_view.run(page, default_page=page is pages[0])  # the sidebar and the page, in the first view's order
