"""Reading the MLflow runs of a benchmark, the report table and plot."""
