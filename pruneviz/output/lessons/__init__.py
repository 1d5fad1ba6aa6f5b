"""The lessons' charts (one module per lesson), built from their measured results."""
