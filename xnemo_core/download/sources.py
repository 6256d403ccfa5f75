"""Where each part of the official model comes from, and asking every source whether it will give
its files before any is fetched (so that a gated repository is found before 11 GiB arrive).

* X-NeMo's four files: the official Google Drive folder (through ``gdown``, which knows Drive's
  confirmation pages), a plain URL above them (a mirror), or a folder where the user put them.
* The CLIP image encoder and the VAE: their Hugging Face Hub repositories (``huggingface_hub``
  names the URLs, the token and the errors; the bytes come through :mod:`.transfer`, which resumes
  across runs where the Hub client would start again).
"""

import dataclasses
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..files import publish, user_mode
from ..layouts import BASE_IMAGE_ENCODER, BASE_VAE, IMAGE_VARIATIONS, SVD, XNEMO_RELEASE
from .transfer import Report, partial_path, transfer

XNEMO_FILES = tuple(
    f"xnemo_{part}.pth" for part in ("denoising_unet", "reference_unet", "motion_encoder", "temporal_module")
)
DRIVE_FILE = "https://drive.google.com/uc?id="
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
MANUAL_XNEMO = f"download the four xnemo_*.pth files in a browser from {XNEMO_RELEASE} and pass their folder"
XNEMO_LICENCE = (
    "CC BY-NC 4.0: non-commercial research use only (ByteDance, https://github.com/bytedance/x-nemo-inference)"
)


class DownloadError(ValueError):
    """A download that cannot go on; the message says what to do instead (one line where it can)."""


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
        f"CreativeML OpenRAIL-M (creativeml-openrail-m on its model card, {IMAGE_VARIATIONS})",
    ),
    "vae": HubPart(
        "stabilityai/stable-video-diffusion-img2vid-xt",
        BASE_VAE.parent,
        (
            ("vae/config.json",),
            ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"),
        ),
        "Stability AI's community licence (stable-video-diffusion-community on its model card; commercial terms "
        f"at https://stability.ai/license); the repository is gated: accept it at {SVD} while logged in",
    ),
}
TINY_DECODER = HubPart(
    "madebyollin/taesd",
    Path("."),
    (("taesd_encoder.safetensors",), ("taesd_decoder.safetensors",)),
    "MIT (madebyollin/taesd's model card)",
)
"""TAESD in its original files, named as ComfyUI's ``models/vae_approx`` keeps them (its Load VAE
offers ``taesd`` when both are there); the decoder is what X-NeMo uses (:mod:`~xnemo_core.tiny_decoder`)."""
UNET_CONFIG = dataclasses.replace(HUB_PARTS["image_encoder"], files=(("unet/config.json",),))
"""The UNets' shape (1 kB), fetched with X-NeMo's files as the official code reads it; the base
UNet's weights are not needed (X-NeMo's files hold every UNet weight)."""


HUB_SOURCES = {**HUB_PARTS, "tiny_decoder": TINY_DECODER}
"""Where each part other than X-NeMo's own files comes from: the base model parts, and the extras."""


def licences(parts: tuple[str, ...]) -> list[str]:
    """One line per selected part naming what the user accepts by downloading it."""
    lines = [f"X-NeMo weights: {XNEMO_LICENCE}"] if "xnemo" in parts else []
    return lines + [
        f"{HUB_SOURCES[p].repo_id} ({p.replace('_', ' ')}): {HUB_SOURCES[p].licence}" for p in parts if p != "xnemo"
    ]


@dataclass(frozen=True)
class Remote:
    """One file to fetch: ``name`` within the model folder, and where it comes from (``via``
    ``http`` through :func:`.transfer`, ``drive`` through gdown, ``local`` a file on this machine)."""

    name: str
    url: str
    via: str = "http"
    size: int | None = None
    digest: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def hub_remotes(part: HubPart, slots, token: str | None, endpoint: str | None) -> list[Remote]:
    """The files of ``slots`` (each a tuple of alternatives) that ``part``'s repository gives,
    asked with a HEAD request each: a gated repository, a missing file or an unreachable Hub is
    refused here, before anything is fetched."""
    return [_hub_remote(part, alternatives, token, endpoint) for alternatives in slots]


def _hub_remote(part: HubPart, alternatives, token, endpoint) -> Remote:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.utils import build_hf_headers

    for name in alternatives:
        url = hf_hub_url(part.repo_id, name, endpoint=endpoint)
        with _hub_errors(part):
            try:
                metadata = get_hf_file_metadata(url, token=token)
            except EntryNotFoundError:
                continue
        headers = build_hf_headers(token=token)
        return Remote(str(part.folder / name), url, size=metadata.size, digest=metadata.etag, headers=headers)
    raise DownloadError(
        f"{part.repo_id} has none of {', '.join(alternatives)}; the repository changed (README: Models)"
    )


@contextmanager
def _hub_errors(part: HubPart) -> Iterator[None]:
    """The Hub's refusals as one-line :class:`DownloadError`s saying what to do."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    manual = f"or put its files in the model folder's {part.folder}/ by hand (README: Models)"
    try:
        yield
    except GatedRepoError as error:
        raise DownloadError(
            f"{part.repo_id} is gated: accept its licence at {part.page} while logged in, then pass a read token "
            f"(--token, HF_TOKEN or `hf auth login`; make one at {TOKENS_PAGE}), {manual}; nothing was fetched"
        ) from error
    except OfflineModeIsEnabled as error:
        raise DownloadError(f"HF_HUB_OFFLINE is set, so {part.repo_id} is not asked: unset it, {manual}") from error
    except RepositoryNotFoundError as error:
        raise DownloadError(
            f"{part.repo_id} was not found or needs a token (--token or `hf auth login`), {manual}"
        ) from error
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        raise DownloadError(
            f"the Hugging Face Hub answered HTTP {status} for {part.repo_id} (a fault on its side: try again later), "
            f"{manual}"
        ) from error
    except Exception as error:
        if _unreachable(error):
            raise DownloadError(
                f"cannot reach the Hugging Face Hub for {part.repo_id} (no network?), {manual}"
            ) from error
        raise


def xnemo_remotes(names: list[str], source: str | None) -> list[Remote]:
    """X-NeMo's files ``names`` from ``source``: ``None`` for the official Google Drive folder, an
    ``http(s)://`` URL under which they lie, or a local folder; each asked for before any is fetched."""
    if source is None:
        return _drive_remotes(names)
    if source.startswith(("http://", "https://")):
        return [_mirror_remote(f"{source.rstrip('/')}/{name}", name) for name in names]
    folder = Path(source)
    absent = [name for name in names if not (folder / name).is_file()]
    if absent:
        raise DownloadError(f"{folder}: lacks {', '.join(absent)} (download them from {XNEMO_RELEASE})")
    return [Remote(name, str(folder / name), via="local", size=(folder / name).stat().st_size) for name in names]


def _drive_remotes(names: list[str]) -> list[Remote]:
    gdown = _gdown()
    with drive_errors():
        listing = gdown.download_folder(url=XNEMO_RELEASE, skip_download=True, quiet=True)
    ids = {Path(entry.path).name: entry.id for entry in listing}
    unlisted = [name for name in names if name not in ids]
    if unlisted:
        raise DownloadError(f"the X-NeMo Google Drive folder lists no {', '.join(unlisted)}; {MANUAL_XNEMO}")
    return [Remote(name, DRIVE_FILE + ids[name], via="drive") for name in names]


def _mirror_remote(url: str, name: str) -> Remote:
    import requests

    try:
        response = requests.head(url, allow_redirects=True, timeout=30)
    except requests.RequestException as error:
        raise DownloadError(f"cannot reach {url} (no network?): {_one_line(error)}; or {MANUAL_XNEMO}") from error
    if response.status_code >= 400:
        missing = "has no such file" if response.status_code == 404 else "refuses it"
        raise DownloadError(
            f"{url}: HTTP {response.status_code} (the server {missing}); check the URL given for X-NeMo's files "
            f"(--xnemo-from), or {MANUAL_XNEMO}; nothing was fetched"
        )
    length = response.headers.get("Content-Length", "")
    return Remote(name, url, size=int(length) if length.isdigit() else None)


def fetch(remote: Remote, folder: Path, report: Report | None) -> Path:
    """``remote`` into ``folder`` (the model folder or the staging one) under its name."""
    target = folder / remote.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if remote.via == "local":
        return _link_or_copy(Path(remote.url), target)
    if remote.via == "drive":
        return _fetch_from_drive(remote.url, target, report)
    with _transfer_errors(remote):
        return transfer(remote.url, target, remote.size, remote.digest, remote.headers, report)


@contextmanager
def _transfer_errors(remote: Remote) -> Iterator[None]:
    import requests

    try:
        yield
    except requests.HTTPError as error:
        raise DownloadError(
            f"{remote.url}: HTTP {error.response.status_code} while fetching {Path(remote.name).name}; "
            "the bytes received are kept: run the download again later to resume"
        ) from error
    except requests.RequestException as error:
        raise DownloadError(
            f"the transfer of {Path(remote.name).name} broke off ({_one_line(error)}); the bytes received are kept: "
            "run the download again to resume"
        ) from error


def _link_or_copy(source: Path, target: Path) -> Path:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy, written under a temporary name
        partial = partial_path(target)
        shutil.copyfile(source, partial)
        publish(partial, target)
    return target


def _gdown():
    try:
        import gdown
    except ImportError as error:
        raise DownloadError(
            f"downloading from Google Drive needs gdown (pip install gdown); or {MANUAL_XNEMO}"
        ) from error
    return gdown


def _fetch_from_drive(url: str, target: Path, report: Report | None) -> Path:
    """One file through gdown (Drive's confirmation pages handled); its partial file, kept when
    interrupted, is resumed by the next run."""
    gdown = _gdown()
    progress = (lambda done, total: report(target.name, done, total)) if report else None
    with drive_errors():
        gdown.download(url=url, output=str(target), resume=True, retries=3, timeout=60, progress=progress, quiet=True)
    target.chmod(user_mode(0o666))  # gdown's temporary file was 0600
    return target


@contextmanager
def drive_errors() -> Iterator[None]:
    """gdown's and requests' failures as one-line :class:`DownloadError`s."""
    import requests

    try:
        yield
    except DownloadError:
        raise
    except Exception as error:
        text = _one_line(error).split(".\nThe received bytes")[0].split(". The received bytes")[0]
        if "too many users" in text.lower() or "quota" in text.lower():
            raise DownloadError(
                "Google Drive refuses the download for now (its quota: too many users have downloaded the files "
                f"lately); try again in a few hours, or {MANUAL_XNEMO}"
            ) from error
        if _unreachable(error):
            raise DownloadError(f"cannot reach the X-NeMo files (no network?): {text}; or {MANUAL_XNEMO}") from error
        if isinstance(error, (requests.RequestException, _gdown().exceptions.DownloadError)):
            raise DownloadError(
                f"the X-NeMo download broke off: {text}; the bytes received are kept and running the download "
                f"again resumes from them, or {MANUAL_XNEMO}"
            ) from error
        raise


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _unreachable(error: BaseException) -> bool:
    """Whether ``error`` or what it was raised from is a failure to connect (gdown and the Hub
    client wrap the network's errors after their retries)."""
    import requests

    while error is not None:
        if (
            isinstance(error, (requests.ConnectionError, ConnectionError, TimeoutError))
            or "Connect" in type(error).__name__
        ):
            return True
        error = error.__cause__ or error.__context__
    return False
