"""Streamlit helpers for the pages: the only part of pruneviz that imports streamlit."""
