"""Token table -> frames (tables) -> plotly figures (plots, lab_plots) -> HTML report. No streamlit."""
