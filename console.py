"""Integration Settings console: `streamlit run console.py`."""

import streamlit as st

st.set_page_config(page_title="Integration Settings", page_icon="🔑", layout="wide")
st.title("Integration Settings")
st.info("The console is coming soon. Manage API keys with `python -m core keys …` meanwhile.")
