"""The output folder: its names, state.json, atomic writes and the three-way merge."""
