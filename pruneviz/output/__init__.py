"""What goes out: figures (data → go.Figure), the HTML report, the export bundle and the
slimmed-model files."""
