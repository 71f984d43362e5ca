"""Benchmark suites' datasets, as their maintainers group them: a registry of names, read by the
results stage (which datasets a leaderboard submission must hold) and by the GEO-Bench-2 survey
(``--geobench2``'s default datasets: the Core dimension), never by the analysis.

The GEO-Bench-2 leaderboard's dimensions are those of The-AI-Alliance/GEO-Bench-2-Leaderboard's
``utils/constants.py`` (``DIMENSIONS``); dataset names are lower case, as its CSV holds them.
"""

from __future__ import annotations

# The leaderboard's dimensions: a submission holds every dataset of at least one.
GEOBENCH2_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "Multi-Spectral-Dependent": (
        "benv2", "biomassters", "pastis", "so2sat", "cloudsen12", "spacenet2", "burn_scars", "fotw",
    ),
    "Multi-Temporal": ("kuro_siwo", "pastis", "biomassters", "dynamic_earthnet"),
    "Pixel-wise": (
        "kuro_siwo", "pastis", "burn_scars", "spacenet2", "cloudsen12", "caffe", "flair2",
        "dynamic_earthnet", "biomassters", "spacenet7", "fotw",
    ),
    "Classification": ("so2sat", "forestnet", "benv2", "treesatai"),
    "Detection (Object/Instance)": ("substation", "everwatch", "nzcattle", "pastis_r"),
    "Under 10m Resolution": ("spacenet2", "treesatai", "flair2", "dynamic_earthnet", "spacenet7"),
    "10m and Above Resolution": (
        "biomassters", "so2sat", "kuro_siwo", "cloudsen12", "pastis", "benv2", "forestnet",
        "burn_scars", "caffe", "fotw",
    ),
    "RGB/NIR": ("flair2", "treesatai", "dynamic_earthnet", "spacenet7", "fotw"),
    "Core": (
        "kuro_siwo", "pastis", "burn_scars", "cloudsen12", "flair2", "spacenet7", "benv2",
        "treesatai", "biomassters", "fotw", "substation", "everwatch",
    ),
}  # fmt: skip

# The GEO-Bench-2 leaderboard's metric for each task type, and the name TerraTorch's task logs it under.
LEADERBOARD_METRICS: dict[str, tuple[str, str]] = {
    "classification": ("Overall_Accuracy", "val/Accuracy_Micro"),
    "multilabel_classification": ("Multilabel_F1_Score", "val/Multilabel_F1_Score"),
    "segmentation": ("Multiclass_Jaccard_Index", "val/mIoU"),
    "regression": ("RMSE", "val/RMSE"),
}
