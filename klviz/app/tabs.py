"""Tabs of which only the open one is built: Mass shift's views and the KL lab's sections."""

from __future__ import annotations

import streamlit as st


def open_tab(labels: list[str], key: str):
    """st.tabs of which only the open one is drawn: returns (its label, its container).

    With on_change="rerun" the tabs track which one is open (`tab.open`) and a click reruns the
    page, so the page builds the open tab's content alone.
    """
    tabs = st.tabs(labels, key=key, on_change="rerun")
    return next(((label, tab) for label, tab in zip(labels, tabs) if tab.open), (labels[0], tabs[0]))
