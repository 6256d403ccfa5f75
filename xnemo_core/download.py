"""Fetching the official model, only when the user asks for it (``python -m xnemo_core download``,
the *Download X-NeMo Model* node).

The four X-NeMo files come from the official Google Drive folder (through ``gdown``), from another
URL, or from a folder where the user downloaded them by hand; the CLIP image encoder and the VAE
come from their Hugging Face Hub repositories (through ``huggingface_hub``, only the needed files).
Everything lands in the official layout (:mod:`~xnemo_core.layouts`), so the strict loader checks
it afterwards like any model folder. A file already in place is never fetched again nor replaced;
both libraries write under a temporary name first, so an interrupted download leaves no
half-written file under a real name, and ``gdown`` resumes its partial files on the next run.
"""

import dataclasses
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from inspect import signature
from pathlib import Path

from tqdm.auto import tqdm

from .bundled import BUNDLED
from .choices import DOWNLOAD_PARTS
from .files import check_output_path
from .layouts import BASE_IMAGE_ENCODER, BASE_VAE, IMAGE_VARIATIONS, SVD, XNEMO_RELEASE

XNEMO_FILES = tuple(
    f"xnemo_{part}.pth" for part in ("denoising_unet", "reference_unet", "motion_encoder", "temporal_module")
)
DRIVE_FILE = "https://drive.google.com/uc?id="
TOKENS_PAGE = "https://huggingface.co/settings/tokens"


@dataclass(frozen=True)
class HubPart:
    """A base model part: ``files`` in ``repo_id`` (alternatives per file, preferred first),
    stored under ``folder`` of the model folder as in the official layout."""

    repo_id: str
    folder: Path
    files: tuple[tuple[str, ...], ...]
    licence: str

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


HUB_PARTS = {
    "image_encoder": HubPart(
        "lambdalabs/sd-image-variations-diffusers",
        BASE_IMAGE_ENCODER.parent,
        (("image_encoder/config.json",), ("image_encoder/model.safetensors", "image_encoder/pytorch_model.bin")),
        f"the licence on its model card, {IMAGE_VARIATIONS}",
    ),
    "vae": HubPart(
        "stabilityai/stable-video-diffusion-img2vid-xt",
        BASE_VAE.parent,
        (
            ("vae/config.json",),
            ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"),
        ),
        f"Stability AI's Stable Video Diffusion licence (gated: accept it at {SVD} while logged in)",
    ),
}
UNET_CONFIG = dataclasses.replace(HUB_PARTS["image_encoder"], files=(("unet/config.json",),))
"""The UNets' shape (1 kB), fetched with X-NeMo's files as the official code reads it; the base
UNet's weights are not needed (X-NeMo's files hold every UNet weight)."""
XNEMO_LICENCE = (
    "CC BY-NC 4.0: non-commercial research use only (ByteDance, https://github.com/bytedance/x-nemo-inference)"
)
PARTS = DOWNLOAD_PARTS
"""What can be downloaded: the X-NeMo release's four files, the CLIP image encoder, the VAE."""

Report = Callable[[str, int, int | None], None]
"""``report(file name, bytes so far, total bytes or None)``; may raise to stop the download."""


class DownloadError(ValueError):
    """A download that cannot go on; the message says what to do instead (one line where it can)."""


def licences(parts: tuple[str, ...]) -> list[str]:
    """One line per selected part naming what the user accepts by downloading it."""
    lines = [f"X-NeMo weights: {XNEMO_LICENCE}"] if "xnemo" in parts else []
    return lines + [
        f"{HUB_PARTS[p].repo_id} ({p.replace('_', ' ')}): {HUB_PARTS[p].licence}" for p in parts if p != "xnemo"
    ]


def check_parts(parts) -> tuple[str, ...]:
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise DownloadError(f"unknown part(s) {', '.join(unknown) or '(none)'}; choose among {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in parts)


def fetch(
    folder: str | Path,
    parts: tuple[str, ...] = PARTS,
    xnemo_from: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    report: Report | None = None,
) -> list[Path]:
    """Download ``parts`` into ``folder`` in the official layout; returns the files it wrote.

    ``xnemo_from``: ``None`` for the official Google Drive folder, an ``http(s)://`` URL under which
    the four files lie, or a local folder holding them (hard-linked, or copied across file systems).
    ``token`` and ``endpoint`` go to the Hub (``None``: the logged-in token / ``HF_TOKEN``, and
    ``HF_ENDPOINT`` or huggingface.co)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DownloadError(f"{folder}: is a file; the model is downloaded into a folder")
    check_output_path(folder, untouchable=[BUNDLED], folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    hub = endpoint or os.environ.get("HF_ENDPOINT")
    for part in check_parts(parts):
        if part == "xnemo":
            written += _fetch_xnemo(folder, xnemo_from, report)
            written += _fetch_hub_part(folder, UNET_CONFIG, token, hub, report)
        else:
            written += _fetch_hub_part(folder, HUB_PARTS[part], token, hub, report)
    return written


def _fetch_xnemo(folder: Path, source: str | None, report: Report | None) -> list[Path]:
    missing = [name for name in XNEMO_FILES if not (folder / name).exists()]
    if not missing:
        return []
    if source is None:
        return _fetch_from_drive(folder, missing, report)
    if source.startswith(("http://", "https://")):
        return [_fetch_url(f"{source.rstrip('/')}/{name}", folder / name, report) for name in missing]
    return _link_or_copy(Path(source), folder, missing)


def _link_or_copy(source: Path, folder: Path, names: list[str]) -> list[Path]:
    absent = [name for name in names if not (source / name).is_file()]
    if absent:
        raise DownloadError(f"{source}: lacks {', '.join(absent)} (download them from {XNEMO_RELEASE})")
    written = []
    for name in names:
        try:
            os.link(source / name, folder / name)
        except OSError:  # another file system, or links not allowed: a copy, written under a temporary name
            partial = folder / f"{name}.partial"
            shutil.copyfile(source / name, partial)
            os.replace(partial, folder / name)
        written.append(folder / name)
    return written


def _gdown():
    try:
        import gdown
    except ImportError as error:
        raise DownloadError(
            "downloading from Google Drive needs gdown (pip install gdown); or download the four "
            f"xnemo_*.pth files in a browser from {XNEMO_RELEASE} and pass their folder"
        ) from error
    return gdown


def _fetch_from_drive(folder: Path, names: list[str], report: Report | None) -> list[Path]:
    gdown = _gdown()
    with _drive_errors():
        listing = gdown.download_folder(url=XNEMO_RELEASE, skip_download=True, quiet=True)
    ids = {Path(entry.path).name: entry.id for entry in listing}
    unlisted = [name for name in names if name not in ids]
    if unlisted:
        raise DownloadError(
            f"the X-NeMo Google Drive folder lists no {', '.join(unlisted)}; download the files by hand from "
            f"{XNEMO_RELEASE} and pass their folder"
        )
    return [_fetch_url(DRIVE_FILE + ids[name], folder / name, report) for name in names]


def _fetch_url(url: str, target: Path, report: Report | None) -> Path:
    """One file through gdown (Drive's confirmation pages handled); its partial file, kept when
    interrupted, is resumed by the next call."""
    gdown = _gdown()
    progress = (lambda done, total: report(target.name, done, total)) if report else None
    with _drive_errors():
        gdown.download(url=url, output=str(target), resume=True, retries=3, timeout=60, progress=progress)
    return target


@contextmanager
def _drive_errors():
    """gdown's and requests' failures as one-line :class:`DownloadError`s."""
    import requests

    try:
        yield
    except DownloadError:
        raise
    except Exception as error:
        manual = f"download the four xnemo_*.pth files in a browser from {XNEMO_RELEASE} and pass their folder"
        text = " ".join(str(error).split())
        if "too many users" in text.lower() or "quota" in text.lower():
            raise DownloadError(
                f"Google Drive refuses the download for now (its quota: too many users have downloaded the files "
                f"lately); try again in a few hours, or {manual}"
            ) from error
        if any(isinstance(cause, requests.ConnectionError) for cause in _causes(error)):
            raise DownloadError(f"cannot reach the X-NeMo files (no network?): {text}; or {manual}") from error
        if isinstance(error, (requests.RequestException, _gdown().exceptions.DownloadError)):
            raise DownloadError(
                f"the X-NeMo download failed: {text}; run the command again to resume, or {manual}"
            ) from error
        raise


def _causes(error: BaseException):
    """``error`` and what it was raised from (gdown wraps the network's errors after its retries)."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _fetch_hub_part(folder: Path, part: HubPart, token, endpoint, report: Report | None) -> list[Path]:
    local = folder / part.folder
    written = []
    for alternatives in part.files:
        if any((local / name).exists() for name in alternatives):
            continue
        written.append(_fetch_first_of(local, part, alternatives, token, endpoint, report))
    return written


def _fetch_first_of(local: Path, part: HubPart, alternatives, token, endpoint, report) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    # per-chunk progress (and Cancel) where this huggingface_hub takes a progress bar class; older ones
    # report nothing until the file is complete
    progress = {"tqdm_class": _reporting_bar(report)} if "tqdm_class" in signature(hf_hub_download).parameters else {}
    for name in alternatives:
        with _hub_errors(part, local):
            try:
                path = hf_hub_download(part.repo_id, name, local_dir=local, token=token, endpoint=endpoint, **progress)
            except EntryNotFoundError as error:
                if isinstance(error, LocalEntryNotFoundError):  # no network: not a missing alternative
                    raise
                continue
        return Path(path)
    raise DownloadError(
        f"{part.repo_id} has none of {', '.join(alternatives)}; the repository changed (README: Models)"
    )


def _reporting_bar(report: Report | None) -> type[tqdm] | None:
    if report is None:
        return None

    class ReportingBar(tqdm):
        def update(self, n=1):
            shown = super().update(n)
            report(str(self.desc), self.n, self.total)
            return shown

    return ReportingBar


@contextmanager
def _hub_errors(part: HubPart, local: Path):
    """The Hub's failures as one-line :class:`DownloadError`s saying what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    manual = f"or put its files in {local}/ by hand (README: Models)"
    try:
        yield
    except GatedRepoError as error:
        raise DownloadError(
            f"{part.repo_id} is gated: accept its licence at {part.page} while logged in, then pass a read token "
            f"(--token, HF_TOKEN or `hf auth login`; make one at {TOKENS_PAGE}), {manual}"
        ) from error
    except OfflineModeIsEnabled as error:
        raise DownloadError(
            f"HF_HUB_OFFLINE is set, so {part.repo_id} cannot be reached; unset it, {manual}"
        ) from error
    except LocalEntryNotFoundError as error:
        raise DownloadError(f"cannot reach the Hugging Face Hub for {part.repo_id} (no network?), {manual}") from error
    except RepositoryNotFoundError as error:
        raise DownloadError(
            f"{part.repo_id} was not found or needs a token (pass --token or log in), {manual}"
        ) from error
    except HfHubHTTPError as error:
        raise DownloadError(f"{part.repo_id}: {' '.join(str(error).split())[:300]}; run again, {manual}") from error


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
) -> tuple[Path, bool]:
    """:func:`fetch`, then the strict check of everything downloaded; with ``convert`` the model is
    written as fp16 safetensors into ``folder`` (configs embedded, no pickle left) and the official
    files are removed. Returns the model's folder, and whether the model is complete (a model
    without its X-NeMo files is neither checked as a whole nor converted)."""
    from .convert import check_output, write_parts

    target = Path(folder)
    parts = check_parts(parts)
    check_output_path(target, untouchable=[BUNDLED], folder=True)
    if convert and _converted(target, parts):
        say(f"{target} holds the converted model already; nothing to fetch")
        return target, "xnemo" in parts or _converted(target, ("xnemo",))
    if convert:
        check_output(target, bundle=False)
    local_source = xnemo_from and "xnemo" in parts and not xnemo_from.startswith(("http://", "https://"))
    if local_source and not Path(xnemo_from).is_dir():
        raise DownloadError(f"{xnemo_from}: no such folder (it should hold the four xnemo_*.pth files)")
    for line in licences(parts):
        say(f"licence: {line}")
    official = staging_folder(target) if convert else target
    fetch(official, parts, xnemo_from, token, endpoint, report)
    models = check_downloaded(official, parts)
    if models is None or not convert:
        return official, models is not None
    for path in write_parts(models, target):
        say(f"wrote {path}")
    shutil.rmtree(official)
    return target, True


def _converted(target: Path, parts: tuple[str, ...]) -> bool:
    """Whether an earlier ``convert`` wrote every part of ``parts`` into ``target``."""
    from .layouts import XNEMO_PARTS

    names = [*(XNEMO_PARTS if "xnemo" in parts else ()), *(p for p in parts if p != "xnemo")]
    return all((target / f"xnemo_{name}.safetensors").is_file() for name in names)


def check_downloaded(folder: Path, parts: tuple[str, ...]):
    """Load what was downloaded strictly (the whole model when its X-NeMo files are there); a
    damaged file is named, with what to do. Returns the loaded models, or ``None`` when the
    X-NeMo files are still missing."""
    from .checkpoints import CheckpointError
    from .layouts import XNEMO_PARTS, open_layout
    from .loading import load_base_part, load_models

    try:
        if all(open_layout(folder).has_part(part) for part in XNEMO_PARTS):
            return load_models(folder, dtype="fp16")
        for part in parts:
            if part != "xnemo":
                load_base_part(folder, part)
    except CheckpointError as error:
        raise DownloadError(
            f"a downloaded file failed the strict check: {error}\ndelete that file and run the download again"
        ) from error
    return None
