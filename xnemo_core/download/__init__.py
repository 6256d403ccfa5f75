"""Fetching the official model, only when the user asks for it (``xnemo download``, the *Download
X-NeMo Model* node), and finishing whatever an earlier run started.

    the selected parts ───┐
    DEST (either form) ───┼─► parts already there: checked ─► every source asked ─► missing files fetched
    staged originals ─────┘        (a damaged file named)      (gated? 404? disk?)   ─► checked ─► converted

A part (X-NeMo's files, the CLIP image encoder, the VAE; on request the tiny decoder) is complete
in its *official* form (the release's files in the official layout, :mod:`~xnemo_core.layouts`) or
its *converted* one (``xnemo_<part>.safetensors``); a complete part is never fetched again, and
every part the folder holds is loaded strictly before the run says it is ready. A plain download
fetches into DEST. With ``convert`` the originals go to a hidden staging folder beside DEST; the
converted files are written there and moved into DEST only once each is complete (a model list
never shows a half-made model), then the originals are removed. The tiny decoder (TAESD) is
published as safetensors already: it goes straight into DEST, under the names ComfyUI's
``models/vae_approx`` uses. Stopped anywhere, a run keeps the bytes it received (hidden
``.partial`` files) and the originals it staged; the same command resumes.
"""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..bundled import BUNDLED
from ..choices import DOWNLOAD_EXTRAS, DOWNLOAD_PARTS, command_name
from ..files import check_output_path
from ..layouts import XNEMO_PARTS
from .sources import (
    HUB_PARTS,
    HUB_SOURCES,
    TINY_DECODER,
    UNET_CONFIG,
    XNEMO_FILES,
    DownloadError,
    Remote,
    fetch,
    hub_remotes,
    licences,
    xnemo_remotes,
)
from .transfer import Report, partial_path

__all__ = ["EXTRAS", "PARTS", "XNEMO_FILES", "Downloaded", "DownloadError", "download", "licences", "staging_folder"]

PARTS = DOWNLOAD_PARTS
"""The model's parts: the X-NeMo release's four files, the CLIP image encoder, the VAE."""
EXTRAS = DOWNLOAD_EXTRAS
"""Parts fetched only when asked for (the tiny decoder); the model is complete without them."""
PART_NAMES = {
    "xnemo": "X-NeMo's files",
    "image_encoder": "the CLIP image encoder",
    "vae": "the VAE",
    "tiny_decoder": "the tiny decoder (TAESD)",
}
TINY_DECODER_FILE = TINY_DECODER.files[1][0]
TINY_FILES = tuple(alternatives[0] for alternatives in TINY_DECODER.files)
OFFICIAL_SLOTS = {
    "xnemo": tuple((name,) for name in XNEMO_FILES) + ((str(UNET_CONFIG.folder / UNET_CONFIG.files[0][0]),),),
    **{
        part: tuple(tuple(str(hub.folder / name) for name in alternatives) for alternatives in hub.files)
        for part, hub in HUB_SOURCES.items()
    },
}
"""Per part, its files in the official layout: each a tuple of alternatives (any one will do)."""
CONVERTED_FILES = {
    "xnemo": tuple(f"xnemo_{part}.safetensors" for part in XNEMO_PARTS),
    "image_encoder": ("xnemo_image_encoder.safetensors",),
    "vae": ("xnemo_vae.safetensors",),
    "tiny_decoder": TINY_FILES,
}
HUB_CACHE = Path(".cache", "huggingface")
"""What ``huggingface_hub`` kept inside a model folder when it downloaded there (metadata and partial files)."""
CONVERTED = "converted"
"""The staging folder's subfolder where converted files wait until they are complete."""
STRICT_CHECK_BYTES = 6 << 30
"""Memory the strict check of the whole official model takes (fp16): what the README promises."""


@dataclass(frozen=True)
class Downloaded:
    """What a download left: the model ``folder`` and the ``parts`` it holds, every one of them
    loaded strictly in this run."""

    folder: Path
    parts: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return set(PARTS) <= set(self.parts)

    def summary(self) -> str:
        """What the folder holds and the command (or node) that goes on from here."""
        tiny = ""
        if "tiny_decoder" in self.parts:
            tiny = f" --tiny-decoder {self.folder / TINY_DECODER_FILE}"
        if self.complete:
            return (
                f"ready: {self.folder} (every part loaded strictly); animate with: "
                f"{command_name()} animate --models {self.folder}{tiny}"
            )
        if tiny and not any(p in self.parts for p in PARTS):
            decoder = self.folder / TINY_DECODER_FILE
            return f"{PART_NAMES['tiny_decoder']}: {decoder} (loaded strictly); decode with it: animate …{tiny}"
        held = ", ".join(PART_NAMES[p] for p in self.parts) or "nothing"
        missing = [p for p in PARTS if p not in self.parts]
        line = f"{self.folder} holds {held} (loaded strictly); it lacks {', '.join(PART_NAMES[p] for p in missing)}"
        if "xnemo" in self.parts:
            line += (
                "; in ComfyUI connect an SVD VAE and CLIP ViT-L/14 vision model to Load X-NeMo, or add the parts for "
                "the command line too"
            )
        return f"{line}: {command_name()} download {self.folder} --parts {' '.join(missing)}"


def check_parts(parts) -> tuple[str, ...]:
    known = PARTS + EXTRAS
    unknown = [p for p in parts if p not in known]
    if unknown or not parts:
        raise DownloadError(f"unknown part(s) {', '.join(unknown) or '(none)'}; choose among {', '.join(known)}")
    return tuple(p for p in known if p in parts)


def staging_folder(target: Path) -> Path:
    """Where the official files wait before conversion: a hidden sibling of the converted folder,
    so that model lists show the model only once it is complete."""
    return target.parent / f".{target.name}.download"


def download(
    folder: str | Path,
    parts: tuple[str, ...] = PARTS,
    xnemo_from: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    convert: bool = False,
    report: Report | None = None,
    say: Callable[[str], None] = print,
) -> Downloaded:
    """Bring ``parts`` into ``folder`` and check strictly every part it then holds.

    ``xnemo_from``: ``None`` for the official Google Drive folder, an ``http(s)://`` URL under which
    the four files lie, or a local folder holding them (hard-linked, or copied across file systems).
    ``token`` and ``endpoint`` go to the Hub (``None``: the logged-in token / ``HF_TOKEN``, and
    ``HF_ENDPOINT`` or huggingface.co). ``convert``: the parts end as fp16 safetensors with their
    configs embedded, and no official file is left."""
    target = Path(folder)
    parts = check_parts(parts)
    if target.exists() and not target.is_dir():
        raise DownloadError(f"{target}: is a file; the model is downloaded into a folder")
    check_output_path(target, untouchable=[BUNDLED], folder=True)
    if xnemo_from and "xnemo" in parts and not xnemo_from.startswith(("http://", "https://")):
        if not Path(xnemo_from).is_dir():
            raise DownloadError(f"{xnemo_from}: no such folder (it should hold the four xnemo_*.pth files)")
    staging = staging_folder(target)
    created = not target.exists()
    endpoint = endpoint or os.environ.get("HF_ENDPOINT")  # read now: huggingface_hub reads it once, on import
    try:
        return _download(target, staging, parts, xnemo_from, token, endpoint, convert, report, say)
    finally:
        _tidy(target, staging, created)


def _download(target, staging, parts, xnemo_from, token, endpoint, convert, report, say) -> Downloaded:
    home = staging if convert else target
    homes = {part: target if part in EXTRAS else home for part in PARTS + EXTRAS}  # extras are never converted
    _gather(target, staging, into=home)
    missing = [p for p in parts if _where(p, target, staging) is None]
    for part in parts:
        if part not in missing:
            say(f"{PART_NAMES[part]}: already in {_where(part, target, staging)}; not fetched again")
    for line in licences(tuple(missing)):
        say(f"licence: {line}")
    remotes = _ask_sources(missing, homes, xnemo_from, token, endpoint)
    _check_disk_space(remotes, convert)
    held = [p for p in PARTS + EXTRAS if _where(p, target, staging) is not None]
    for part in held:  # what is there already is checked before anything is fetched
        _check_part(part, _where(part, target, staging), convert, target, say)
    for remote, folder in remotes:
        say(f"fetching {remote.name}")
        folder.mkdir(parents=True, exist_ok=True)
        fetch(remote, folder, report)
    for part in missing:
        _check_part(part, homes[part], convert, target, say)
    return Downloaded(target, tuple(p for p in PARTS + EXTRAS if p in held or p in missing))


def _where(part: str, target: Path, staging: Path) -> Path | None:
    """The folder that holds ``part`` complete in either form: the model folder, else the staging one."""
    for folder in (target, staging):
        if _complete(folder, CONVERTED_FILES[part]) or _complete(folder, OFFICIAL_SLOTS[part]):
            return folder
    return None


def _complete(folder: Path, files) -> bool:
    slots = [(name,) if isinstance(name, str) else name for name in files]
    return all(any((folder / name).is_file() for name in alternatives) for alternatives in slots)


def _gather(target: Path, staging: Path, into: Path) -> None:
    """Bring the official files (and the partial files beside them) of the other folder into
    ``into`` by renaming, so that nothing is fetched twice whichever way the last run went; drop
    converted files an interrupted conversion left waiting (they are made again), the staged
    originals of parts whose conversion was finished, and the Hub client's cache folder that
    earlier versions of this pack left (with the partial files of killed runs in it)."""
    for stale in (staging / CONVERTED, target / HUB_CACHE, staging / HUB_CACHE):
        shutil.rmtree(stale, ignore_errors=True)
    source = target if into == staging else staging
    for part in PARTS:
        slots = OFFICIAL_SLOTS[part]
        names = [name for alternatives in slots for name in alternatives]
        if _complete(target, CONVERTED_FILES[part]):  # converted: staged originals are leftovers
            for name in names:
                (staging / name).unlink(missing_ok=True)
                partial_path(staging / name).unlink(missing_ok=True)
            continue
        for found in (path for name in names for path in (source / name, partial_path(source / name))):
            moved = into / found.relative_to(source)
            if found.is_file() and not moved.exists():
                moved.parent.mkdir(parents=True, exist_ok=True)
                found.replace(moved)


def _ask_sources(missing: list[str], homes: dict[str, Path], xnemo_from, token, endpoint) -> list[tuple[Remote, Path]]:
    """Every file still to fetch and the folder it goes to, each source asked first (the Hub's
    before Google Drive's: the gated VAE is the likeliest refusal)."""
    remotes = []
    for part in reversed(missing):
        home = homes[part]
        hub = UNET_CONFIG if part == "xnemo" else HUB_SOURCES[part]
        absent = [names for names in hub.files if not any((home / hub.folder / name).is_file() for name in names)]
        found = hub_remotes(hub, absent, token, endpoint)
        if part == "xnemo" and (names := [name for name in XNEMO_FILES if not (home / name).is_file()]):
            found += xnemo_remotes(names, xnemo_from)
        remotes += [(remote, home) for remote in found]
    return remotes


def _check_disk_space(remotes: list[tuple[Remote, Path]], convert: bool) -> None:
    """Refuse a download the disk cannot take, before it starts (sizes the sources announced, less
    what partial files hold; with ``convert`` the fp16 copies come on top, about half as much)."""
    if not remotes:
        return
    fetched = sum(r.size - _partial_size(home / r.name) for r, home in remotes if r.size is not None)
    needed = fetched + (fetched // 2 if convert else 0)
    home = remotes[0][1]
    existing = next(folder for folder in (home, *home.parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise DownloadError(
            f"{home}: the download needs about {needed / 2**30:.1f} GiB of disk and {free / 2**30:.1f} GiB are free; "
            "make room or choose another folder; nothing was fetched"
        )


def _partial_size(target: Path) -> int:
    partial = partial_path(target)
    return partial.stat().st_size if partial.exists() else 0


def _check_part(part: str, folder: Path, convert: bool, target: Path, say) -> None:
    """Load ``part`` from ``folder`` strictly (a damaged file is named); with ``convert``, a part in
    its official form is then written converted into ``target`` and its originals removed."""
    from ..checkpoints import CheckpointError

    try:
        modules = _load_part(part, folder)
    except CheckpointError as error:
        raise DownloadError(
            f"a file failed the strict check: {error}; delete that file and run the download again"
        ) from error
    say(f"checked {PART_NAMES[part]} in {folder}")
    if convert and not _complete(folder, CONVERTED_FILES[part]):
        for path in _convert_part(part, modules, folder, target):
            say(f"wrote {path}")


def _load_part(part: str, folder: Path) -> dict:
    """``part``'s modules loaded strictly (X-NeMo's in fp16; a base part in fp32, with its config)."""
    from ..loading import load_base_part, load_models, part_config

    if part == "xnemo":
        return {"models": load_models(folder, dtype="fp16", skip=tuple(HUB_PARTS))}
    if part == "tiny_decoder":
        from ..tiny_decoder import load_tiny_autoencoder

        return {"module": load_tiny_autoencoder(folder / TINY_FILES[0], folder / TINY_DECODER_FILE)}
    return {"module": load_base_part(folder, part), "config": part_config(folder, part)}


def _convert_part(part: str, loaded: dict, folder: Path, target: Path) -> list[Path]:
    import torch
    from torch import nn

    from ..convert import write_part, write_parts

    waiting = folder / CONVERTED
    if part == "xnemo":
        written = write_parts(loaded["models"], waiting)
    else:
        module = nn.Module.to(loaded["module"], dtype=torch.float16)  # plain .to: diffusers' warns on every cast
        written = [write_part(waiting, part, module, {"part": part, "config": loaded["config"]})]
    target.mkdir(parents=True, exist_ok=True)
    placed = [path.replace(target / path.name) for path in written]
    for alternatives in OFFICIAL_SLOTS[part]:
        for name in alternatives:
            (folder / name).unlink(missing_ok=True)
    return placed


def _tidy(target: Path, staging: Path, created: bool) -> None:
    """Remove what holds nothing: the official layout's folders a finished part left empty, a
    staging folder whose files are all gone, a model folder this run created."""
    names = {name for slots in OFFICIAL_SLOTS.values() for alternatives in slots for name in alternatives}
    for folder in (staging, target):
        subfolders = {folder / parent for name in names for parent in Path(name).parents if parent != Path(".")}
        subfolders |= {folder / CONVERTED, folder / HUB_CACHE.parent}
        for sub in sorted(subfolders, key=lambda path: -len(path.parts)):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    if created and target.is_dir() and not any(target.iterdir()):
        target.rmdir()
