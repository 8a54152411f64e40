"""COCO-style caption files: {"images": [{id, file_name}], "annotations": [{image_id, caption}]}."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CaptionSet:
    file_names: list[str]          # one per image, in file order
    captions: list[list[str]]      # captions[i] are the references of file_names[i]

    def __len__(self) -> int:
        return len(self.file_names)


def load_captions(path: str | Path) -> CaptionSet:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read caption file {path}: {e}") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path} is not a COCO-style caption file (needs 'images' and 'annotations')")
    order: dict[int, int] = {}
    names: list[str] = []
    for im in data["images"]:
        order[im["id"]] = len(names)
        names.append(im["file_name"])
    caps: list[list[str]] = [[] for _ in names]
    for ann in data["annotations"]:
        i = order.get(ann["image_id"])
        if i is not None:
            caps[i].append(str(ann["caption"]).strip())
    keep = [i for i, c in enumerate(caps) if c]
    return CaptionSet([names[i] for i in keep], [caps[i] for i in keep])
