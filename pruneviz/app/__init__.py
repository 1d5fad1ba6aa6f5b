"""Streamlit glue only: one Workspace per tab, widgets, background workers. The only part
of the package that imports streamlit."""
