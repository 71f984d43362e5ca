"""GEO-Bench-2 datasets for TerraTorch's tasks: geobenchv2's own datamodule, its batches adapted.

geobenchv2's datamodules read the ``.tortilla`` files, pick the bands by name (``band_order``: a
list, or a dict of lists by modality) and normalise them with the dataset's own statistics.
Their batches hold ``image`` or one ``image_<modality>`` per modality, ``mask`` or ``label``,
and sometimes metadata; a time series comes as (B, T, C, H, W) or (B, C, T, H, W), as each
dataset writes it (some take ``temporal_output_format``). Which axis is time is read from the
shape: the frames asked for (``num_time_steps``) against the bands asked for; where the two
counts are equal, one sample is read at another frame count, and the axis that follows it is
time. TerraTorch's tasks read ``image`` (a tensor, or a dict of tensors by modality)
with ``mask`` or ``label``, and pass every other key on to the model. This datamodule's loaders
(geobenchv2's, with its collate function) keep those keys only: one modality, or the model's
single input, as a tensor (several modalities' bands stacked in ``band_order``'s order); several
modalities for a model that takes them as a dict under the model's names (``modalities``:
dataset modality -> model modality); time second. In training, a batch is flipped at random
(horizontally, vertically), as geobenchv2's default augmentation does.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.utils.data import default_collate
from torchgeo.datamodules import BaseDataModule

KEEP = ("mask", "label")  # the targets TerraTorch's tasks read


class GeoBench2DataModule(BaseDataModule):
    """geobenchv2's datamodule `datamodule` (a class path) on `root`, adapted to TerraTorch (a
    torchgeo datamodule, as terratorch-iterate's tasks take; the data comes normalised).

    `dataset_args` go to geobenchv2's dataset (``num_time_steps``, ...); a time series goes to
    the model as (B, C, T, H, W). `time_first`: the dataset gives (T, C, H, W) per sample, for
    a series whose frames and bands are as many, when the dataset cannot be asked for another
    frame count (otherwise the shape tells, or one sample read at another count).
    """

    def __init__(
        self,
        datamodule: str,
        root: str,
        band_order: list[str] | dict[str, list[str]],
        modalities: dict[str, str] | None = None,
        dataset_args: dict[str, Any] | None = None,
        time_first: bool = False,
        img_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        module, name = datamodule.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        super().__init__(cls, batch_size=batch_size, num_workers=num_workers)
        self.aug = None  # type: ignore[assignment]  # geobenchv2's dataset normalises each sample
        self.order = list(band_order) if isinstance(band_order, dict) else []
        # bands asked for, by modality ("": the one modality), and frames
        self.channels = (
            {m: len(b) for m, b in band_order.items()}
            if isinstance(band_order, dict)
            else {"": len(band_order)}
        )
        self.frames = (dataset_args or {}).get("num_time_steps")
        self.args = {"root": root, "band_order": band_order, **(dataset_args or {})}
        self.cls, self.img_size = cls, img_size
        self.modalities = dict(modalities or {})
        self.time_first = time_first
        self.inner = cls(
            img_size=img_size,
            band_order=band_order,
            batch_size=batch_size,
            eval_batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=self.collate,
            root=root,
            **(dataset_args or {}),
        )

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)
        if self.frames and self.frames in self.channels.values():
            self.time_first = self._time_first_measured()

    def _time_first_measured(self) -> bool:
        """Whether the dataset gives a sample's series as (T, C, H, W): for as many frames as
        bands the shape cannot tell, so one sample is read at one frame more (or less), and the
        axis that follows the count is time."""
        assert self.frames is not None
        failed: Exception | None = None
        for other in (self.frames + 1, self.frames - 1):
            if other < 1:
                continue
            try:
                probe = self.cls(
                    img_size=self.img_size,
                    batch_size=1,
                    eval_batch_size=1,
                    num_workers=0,
                    **{**self.args, "num_time_steps": other},
                )
                probe.setup("fit")
                sample = probe.train_dataset[0]
            except Exception as exc:  # a dataset with no other frame count: try the next
                failed = exc
                continue
            for key, value in sample.items():
                if not key.startswith("image") or not isinstance(value, torch.Tensor):
                    continue
                # only a modality whose bands are not `other` many tells the two axes apart
                bands = self.channels.get(key.removeprefix("image").removeprefix("_"))
                if value.ndim != 4 or bands is None or bands == other:
                    continue
                if tuple(value.shape[:2]) == (other, bands):
                    return True
                if tuple(value.shape[:2]) == (bands, other):
                    return False
        raise ValueError(
            f"cannot tell time from bands in a series of {self.frames} frames of "
            f"{self.frames} bands: no other frame count could be read ({failed})"
        )

    def train_dataloader(self) -> Any:
        self.inner.num_workers = self.num_workers
        return self.inner.train_dataloader()

    def val_dataloader(self) -> Any:
        self.inner.num_workers = self.num_workers
        return self.inner.val_dataloader()

    def test_dataloader(self) -> Any:
        self.inner.num_workers = self.num_workers
        return self.inner.test_dataloader()

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.adapt(default_collate(samples))

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            for dim in (-1, -2):
                if torch.rand(()) < 0.5:
                    batch = {k: _flip(v, dim) for k, v in batch.items()}
        return batch

    def adapt(self, batch: dict[str, Any]) -> dict[str, Any]:
        """geobenchv2's batch -> TerraTorch's: ``image`` (tensor or dict) and the targets."""
        images = {k.removeprefix("image_"): v for k, v in batch.items() if k.startswith("image_")}
        if not images:  # one modality: its name is ""
            images = {"": batch["image"]}
        parts = [(m, self._layout(m, images[m])) for m in self.order or [""] if m in images]
        out = {k: batch[k] for k in KEEP if k in batch}
        mask = out.get("mask")
        if mask is not None and mask.ndim == 4:
            # the per-sample resize of a time series repeats the mask once per frame
            if not torch.equal(mask, mask[:, :1].expand_as(mask)):
                raise ValueError(f"a mask of shape {tuple(mask.shape)} that differs by frame")
            out["mask"] = mask[:, 0]
        if self.modalities:
            out["image"] = {self.modalities[m]: image for m, image in parts}
        elif len(parts) == 1:
            out["image"] = parts[0][1]
        else:
            out["image"] = torch.cat([image for _, image in parts], dim=1)
        return out

    def _layout(self, modality: str, image: torch.Tensor) -> torch.Tensor:
        """A time series as (B, C, T, H, W), whichever of the two the dataset gave."""
        if image.ndim != 5:
            return image
        channels, frames = self.channels.get(modality), self.frames
        axes = tuple(image.shape[1:3])
        if channels == frames or channels is None or frames is None:
            time_first = self.time_first
        elif axes == (channels, frames):
            time_first = False
        elif axes == (frames, channels):
            time_first = True
        else:
            raise ValueError(
                f"a series of shape {tuple(image.shape)} for {channels} bands and {frames} frames"
            )
        return image.permute(0, 2, 1, 3, 4) if time_first else image


def _flip(value: Any, dim: int) -> Any:
    """An image, a dict of images or a mask flipped along `dim`; a class label as it is."""
    if isinstance(value, dict):
        return {k: _flip(v, dim) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.ndim >= 3:
        return value.flip(dim)
    return value
