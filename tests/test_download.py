"""``python -m xnemo_core download`` against a local fake Hub and a local file server in place of
Google Drive: the layout it writes, resuming, gated repositories, damaged files, conversion."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from taesd_original import write_taesd_files

from xnemo_core.__main__ import main
from xnemo_core.download import XNEMO_FILES, DownloadError
from xnemo_core.download.sources import drive_errors
from xnemo_core.loading import load_models
from xnemo_core.tiny_decoder import load_tiny_autoencoder
from xnemo_core.video import read_frames

IMAGE_VARIATIONS = "lambdalabs/sd-image-variations-diffusers"
SVD = "stabilityai/stable-video-diffusion-img2vid-xt"
TAESD = "madebyollin/taesd"
TAESD_FILES = ["taesd_decoder.safetensors", "taesd_encoder.safetensors"]
TOKEN = "hf_local_test_token"
EXPECTED = [
    *XNEMO_FILES,
    "sd-image-variations-diffusers/unet/config.json",
    "sd-image-variations-diffusers/image_encoder/config.json",
    "sd-image-variations-diffusers/image_encoder/model.safetensors",
    "stable-video-diffusion-img2vid-xt/vae/config.json",
    "stable-video-diffusion-img2vid-xt/vae/diffusion_pytorch_model.safetensors",
]


def serve_official_model(fake: FakeHub, official_layout: Path) -> FakeHub:
    """The tiny official-layout model served as the release (``/release``) and the two Hub repositories."""
    fake.add_files("/release", official_layout, list(XNEMO_FILES))
    fake.add_repo(
        IMAGE_VARIATIONS,
        official_layout / "sd-image-variations-diffusers",
        ["image_encoder/config.json", "image_encoder/model.safetensors", "unet/config.json"],
    )
    fake.files[f"/{IMAGE_VARIATIONS}/resolve/main/unet/diffusion_pytorch_model.safetensors"] = b"not needed"
    fake.add_repo(
        SVD,
        official_layout / "stable-video-diffusion-img2vid-xt",
        ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"],
    )
    fake.gated[SVD] = TOKEN
    write_taesd_files(taesd := official_layout.parent / "taesd")
    fake.add_repo(TAESD, taesd, TAESD_FILES)
    return fake


@pytest.fixture
def hub(official_layout, monkeypatch):
    with FakeHub() as fake:
        serve_official_model(fake, official_layout)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(official_layout.parent / "hf-home"))  # no login token of the machine
        yield fake


def download(hub: FakeHub, dest: Path, *extra: str) -> int:
    return main(["download", str(dest), "--xnemo-from", f"{hub.url}/release", *extra])


def files_under(folder: Path) -> list[str]:
    return sorted(
        str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file() and ".cache" not in path.parts
    )


def test_the_model_lands_in_the_official_layout_and_loads(hub, tmp_path, capsys):
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--token", TOKEN) == 0
    out = capsys.readouterr().out
    assert files_under(dest) == sorted(EXPECTED)
    for name in XNEMO_FILES:
        assert (dest / name).read_bytes() == hub.files[f"/release/{name}"]
    assert "licence: X-NeMo weights: CC BY-NC 4.0" in out and f"licence: {SVD}" in out
    assert f"ready: {dest}" in out
    fetched = {path for method, path, _ in hub.requests if method == "GET"}
    assert not any(path.endswith("unet/diffusion_pytorch_model.safetensors") for path in fetched), "only what is needed"
    load_models(dest, dtype="fp32")


def test_an_interrupted_transfer_resumes_where_it_broke_off(hub, tmp_path):
    drive_file = "/release/xnemo_reference_unet.pth"
    hub_file = f"/{IMAGE_VARIATIONS}/resolve/main/image_encoder/model.safetensors"
    hub.break_once |= {drive_file, hub_file}
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--token", TOKEN) == 0
    for path in (drive_file, hub_file):
        first, *_, resumed = hub.gets(path)
        assert first is None and resumed.startswith("bytes="), f"{path}: no ranged request after the break"
        assert 0 < int(resumed.removeprefix("bytes=").rstrip("-")) <= len(hub.files[path]) // 2
        assert (dest / files_under_name(path)).read_bytes() == hub.files[path]


def files_under_name(url_path: str) -> str:
    if url_path.startswith("/release/"):
        return url_path.removeprefix("/release/")
    repo, name = url_path.lstrip("/").split("/resolve/main/")
    return f"{repo.split('/')[1]}/{name}"


def test_a_second_run_fetches_nothing_and_never_replaces_a_users_file(hub, official_layout, tmp_path):
    dest = tmp_path / "xnemo"
    dest.mkdir()
    own = dest / "xnemo_motion_encoder.pth"
    shutil.copyfile(official_layout / "xnemo_motion_encoder.pth", own)
    before = own.stat().st_mtime_ns
    assert download(hub, dest, "--token", TOKEN) == 0
    assert hub.gets("xnemo_motion_encoder.pth") == [], "a file already there is not fetched"
    assert own.stat().st_mtime_ns == before
    hub.requests.clear()
    assert download(hub, dest, "--token", TOKEN) == 0
    assert [r for r in hub.requests if r[0] == "GET"] == []


def test_a_gated_repository_without_token_says_what_to_do_in_one_line(hub, tmp_path, capsys):
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--parts", "vae") == 2
    err = error_line(capsys)
    assert f"{SVD} is gated: accept its licence at https://huggingface.co/{SVD}" in err and "--token" in err
    assert not (dest / "stable-video-diffusion-img2vid-xt" / "vae" / "config.json").exists()


def test_no_network_gives_one_line_with_the_manual_way(hub, tmp_path, monkeypatch, capsys):
    closed = f"http://127.0.0.1:{unused_port()}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    assert main(["download", str(tmp_path / "a"), "--parts", "image_encoder"]) == 2
    error = error_line(capsys)
    assert "cannot reach the Hugging Face Hub" in error and "by hand (README: Models)" in error
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert main(["download", str(tmp_path / "b"), "--parts", "xnemo", "--xnemo-from", f"{closed}/release"]) == 2
    error = error_line(capsys)
    assert f"cannot reach {closed}/release/xnemo_denoising_unet.pth (no network?)" in error
    assert "drive.google.com" in error and "resume" not in error
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists(), "no empty model folder is left"


def error_line(capsys) -> str:
    """The command's own message: one line, the last one (the libraries' retry notes come before it)."""
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("error: ") and not any(line.startswith("error: ") for line in lines[:-1])
    return lines[-1]


def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


QUOTA_PAGE = (
    "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently. Please\n\t"
    "try accessing the file again later. If the file you are trying to access is particularly large or is\n\t"
    "shared with many people, it may take up to 24 hours to be able to view or download the file."
)
BROKEN_OFF = (
    "Download ended early: received 1000 of 2000 bytes the server announced 2000 bytes.\n"
    "The received bytes are kept in /m/xnemo_motion_encoder.pthab12cd34.part, which resume "
    "(--continue on the command line) picks up."
)


@pytest.mark.parametrize(
    "kind, text, said, unsaid",
    [
        ("FileURLRetrievalError", QUOTA_PAGE, ["try again in a few hours", "drive.google.com/drive/folders"], ["\n"]),
        ("DownloadError", BROKEN_OFF, ["running the download again resumes from them"], ["--continue"]),
    ],
    ids=["google drive's quota page becomes one line", "gdown's hint for its own command line is not passed on"],
)
def test_gdowns_errors_become_ours(kind, text, said, unsaid):
    import gdown

    with pytest.raises(DownloadError) as raised, drive_errors():
        raise getattr(gdown.exceptions, kind)(text)
    message = str(raised.value)
    assert all(part in message for part in said) and not any(part in message for part in unsaid)


def test_a_damaged_file_is_refused_by_the_strict_check_and_named(hub, tmp_path, capsys):
    vae = f"/{SVD}/resolve/main/vae/diffusion_pytorch_model.safetensors"
    hub.files[vae] = os.urandom(len(hub.files[vae]))
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--token", TOKEN) == 2
    err = capsys.readouterr().err
    damaged = dest / "stable-video-diffusion-img2vid-xt" / "vae" / "diffusion_pytorch_model.safetensors"
    assert "a file failed the strict check" in err and str(damaged) in err
    assert "delete that file and run the download again" in err


def test_convert_leaves_fp16_safetensors_and_no_pickle(hub, official_layout, tmp_path, capsys):
    dest = tmp_path / "models" / "xnemo"
    assert download(hub, dest, "--token", TOKEN, "--convert") == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        f"xnemo_{part}.safetensors"
        for part in ("denoising_unet", "reference_unet", "motion_encoder", "image_encoder", "vae")
    )
    assert list(dest.parent.iterdir()) == [dest], "the official files' staging folder is gone"
    models = load_models(dest, dtype="fp32")
    reference = load_models(official_layout, dtype="fp16")
    for part, module in reference.modules().items():
        converted = models.modules()[part].state_dict()
        for key, value in module.state_dict().items():
            torch.testing.assert_close(converted[key].to(value.dtype), value, rtol=0, atol=0)
    assert f"wrote {dest / 'xnemo_vae.safetensors'}" in capsys.readouterr().out
    video = tmp_path / "me.mp4"
    quick = ["--frames", "3", "--steps", "1", "--size", "64", "--crop", "none", "--out", str(video)]
    assert main(["animate", "--models", str(dest), *quick]) == 0, capsys.readouterr().err
    assert read_frames(video)[0].shape == (3, 64, 64, 3)


def test_a_damaged_converted_file_already_there_is_named_before_anything_is_fetched(hub, tmp_path, capsys):
    dest = tmp_path / "xnemo"
    dest.mkdir()
    (dest / "xnemo_vae.safetensors").write_bytes(b"mine")
    assert download(hub, dest, "--token", TOKEN, "--convert") == 2
    err = capsys.readouterr().err
    assert f"a file failed the strict check: {dest / 'xnemo_vae.safetensors'}: not a readable safetensors file" in err
    assert [request for request in hub.requests if request[0] == "GET"] == []
    assert (dest / "xnemo_vae.safetensors").read_bytes() == b"mine"


def test_a_converted_model_is_checked_and_not_fetched_again(hub, tmp_path, capsys):
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--token", TOKEN, "--convert") == 0
    written = {path: path.stat().st_mtime_ns for path in dest.iterdir()}
    hub.requests.clear()
    capsys.readouterr()
    assert download(hub, dest, "--token", TOKEN, "--convert") == 0
    out = capsys.readouterr().out
    assert f"X-NeMo's files: already in {dest}; not fetched again" in out
    assert f"checked the VAE in {dest}" in out and f"ready: {dest}" in out
    assert hub.requests == [] and {path: path.stat().st_mtime_ns for path in dest.iterdir()} == written


def test_files_downloaded_by_hand_are_linked_in_and_kept(hub, official_layout, tmp_path, capsys):
    own = tmp_path / "Downloads"
    own.mkdir()
    for name in XNEMO_FILES:
        shutil.copyfile(official_layout / name, own / name)
    dest = tmp_path / "xnemo"
    assert main(["download", str(dest), "--xnemo-from", str(own), "--token", TOKEN, "--convert"]) == 0
    assert all((own / name).read_bytes() == (official_layout / name).read_bytes() for name in XNEMO_FILES)
    assert not any(path.endswith(".pth") for _, path, _ in hub.requests)
    assert main(["download", str(tmp_path / "x2"), "--xnemo-from", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder (it should hold the four xnemo_*.pth files)" in capsys.readouterr().err


def test_a_folder_lacking_parts_names_the_download_command(official_layout, tmp_path):
    from xnemo_core.checkpoints import CheckpointError

    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copyfile(official_layout / "xnemo_reference_unet.pth", partial / "xnemo_reference_unet.pth")
    with pytest.raises(CheckpointError) as raised:
        load_models(partial)
    assert f"python -m xnemo_core download {partial} --parts xnemo" in str(raised.value)


class Interrupted(Exception):
    """What ComfyUI's Cancel button raises inside a progress callback."""


def test_a_download_stopped_midway_resumes_from_its_partial_file(hub, tmp_path):
    from xnemo_core.download import download as fetch_model

    def stop_midway(name, done, total):
        if name == "xnemo_motion_encoder.pth" and done > 0:
            raise Interrupted

    dest = tmp_path / "xnemo"
    with pytest.raises(Interrupted):
        fetch_model(dest, ("xnemo",), f"{hub.url}/release", report=stop_midway, say=lambda line: None)
    assert not (dest / "xnemo_motion_encoder.pth").exists(), "nothing half-written under the real name"
    fetch_model(dest, ("xnemo",), f"{hub.url}/release", say=lambda line: None)
    first, *_, resumed = hub.gets("xnemo_motion_encoder.pth")
    assert first is None and resumed.startswith("bytes=") and int(resumed[6:].rstrip("-")) > 0
    assert (dest / "xnemo_motion_encoder.pth").read_bytes() == hub.files["/release/xnemo_motion_encoder.pth"]


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    root = tmp_path / "models" / "xnemo"
    root.mkdir(parents=True)
    monkeypatch.setenv("XNEMO_MODELS", str(root))
    return root


def node_inputs(hub: FakeHub, **changes) -> dict:
    from nodes.download import EVERYTHING

    inputs = {
        "name": "official",
        "parts": EVERYTHING,
        "convert_to_safetensors": True,
        "accept_licences": True,
        "xnemo_from": f"{hub.url}/release",
    }
    return inputs | changes


def test_the_download_node_writes_models_xnemo_name_and_load_xnemo_lists_it(hub, models_root, monkeypatch):
    from test_nodes import run

    from nodes.loader import load, model_dropdown

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = run("DownloadXNeMoModel", **node_inputs(hub))
    assert "pick 'official' in Load X-NeMo" in result["ui"]["text"][0]
    assert [p.name for p in models_root.iterdir()] == ["official"], "no staging folder left"
    assert "official" in model_dropdown()
    (loaded,) = load("official", "fp32")
    assert loaded.models.vae is not None and loaded.models.image_encoder is not None


def test_the_download_node_lists_nothing_while_it_runs(hub, models_root, monkeypatch):
    from nodes import comfy_bridge
    from nodes.download import XNEMO_ONLY

    seen = []
    monkeypatch.setattr(
        comfy_bridge, "Progress", lambda total: lambda done, total: seen.append(comfy_bridge.model_choices())
    )
    from test_nodes import run

    run("DownloadXNeMoModel", **node_inputs(hub, parts=XNEMO_ONLY))
    assert seen and all("official" not in listed for listed in seen), "a model shows only once it is complete"
    assert sorted(p.name for p in (models_root / "official").iterdir()) == [
        f"xnemo_{part}.safetensors" for part in ("denoising_unet", "motion_encoder", "reference_unet")
    ]
    hub_files = {path.split("/resolve/main/")[1] for _, path, _ in hub.requests if "/resolve/" in path}
    assert hub_files == {"unet/config.json"}, "X-NeMo's files and the UNet config only"


def test_the_download_node_needs_the_licences_accepted_and_a_name_within_the_folder(hub, models_root):
    from test_nodes import run

    with pytest.raises(ValueError, match="set accept_licences to true to accept them:\nX-NeMo weights: CC BY-NC 4.0"):
        run("DownloadXNeMoModel", **node_inputs(hub, accept_licences=False))
    with pytest.raises(ValueError, match="leads outside the folder"):
        run("DownloadXNeMoModel", **node_inputs(hub, name="../elsewhere"))
    with pytest.raises(ValueError, match="give the model a name"):
        run("DownloadXNeMoModel", **node_inputs(hub, name=" "))
    assert hub.requests == []


def test_the_shipped_folder_and_unwritable_places_are_refused_before_any_request(hub, tmp_path, capsys):
    from xnemo_core import bundled

    assert download(hub, bundled.MODEL_ROOT / "official", "--token", TOKEN) == 2
    assert "which is never written to" in capsys.readouterr().err
    assert download(hub, Path("/proc/official"), "--token", TOKEN) == 2
    assert "/proc/official: cannot be written here" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("mine")
    assert download(hub, tmp_path / "a-file", "--token", TOKEN) == 2
    assert (tmp_path / "a-file").read_text() == "mine"
    assert hub.requests == []


# Finishing what an earlier run started (issue 42)


def fetched(hub: FakeHub) -> list[str]:
    return [path for method, path, _ in hub.requests if method == "GET"]


def converted_names(dest: Path) -> list[str]:
    return sorted(path.name for path in dest.iterdir())


ALL_CONVERTED = sorted(
    f"xnemo_{part}.safetensors"
    for part in ("denoising_unet", "reference_unet", "motion_encoder", "image_encoder", "vae")
)


def test_a_conversion_stopped_midway_is_finished_by_the_same_command(hub, tmp_path, monkeypatch, capsys):
    from xnemo_core import convert

    write_part = convert.write_part
    calls = []

    def stopped_on_the_second_file(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write_part(*args, **kwargs)

    monkeypatch.setattr(convert, "write_part", stopped_on_the_second_file)
    dest = tmp_path / "models" / "xnemo"
    assert download(hub, dest, "--token", TOKEN, "--convert") == 130
    assert "the same command resumes" in capsys.readouterr().err.splitlines()[-1]
    assert not dest.exists() or all(p.name.startswith("xnemo_") for p in dest.iterdir())
    assert [p.name for p in dest.parent.iterdir() if not p.name.startswith(".")] in ([], ["xnemo"])
    monkeypatch.setattr(convert, "write_part", write_part)
    hub.requests.clear()
    assert download(hub, dest, "--token", TOKEN, "--convert") == 0
    assert fetched(hub) == [], "the staged originals are converted, not fetched again"
    assert converted_names(dest) == ALL_CONVERTED and list(dest.parent.iterdir()) == [dest]
    load_models(dest, dtype="fp32")


def test_a_model_of_xnemo_files_only_is_completed_later_in_the_same_folder(hub, tmp_path, capsys):
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--parts", "xnemo", "--convert") == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "lacks the CLIP image encoder, the VAE" in summary
    command = summary.split(": python -m xnemo_core ")[-1].split()
    assert command == ["download", str(dest), "--parts", "image_encoder", "vae"]
    hub.requests.clear()
    assert main([*command, "--token", TOKEN, "--convert"]) == 0
    assert not any(path.endswith(".pth") or "unet" in path for path in fetched(hub)), "X-NeMo's files are kept"
    assert converted_names(dest) == ALL_CONVERTED and list(dest.parent.iterdir()) == [dest]
    assert f"ready: {dest}" in capsys.readouterr().out
    load_models(dest, dtype="fp32")


def test_complete_parts_are_recognised_in_either_form(hub, tmp_path):
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--token", TOKEN) == 0
    hub.requests.clear()
    assert download(hub, dest, "--token", TOKEN, "--convert") == 0
    assert fetched(hub) == [] and converted_names(dest) == ALL_CONVERTED, "the plain download is converted in place"
    plain = tmp_path / "plain"
    assert download(hub, plain, "--parts", "xnemo", "--convert") == 0
    hub.requests.clear()
    assert download(hub, plain, "--token", TOKEN) == 0
    assert not any(path.endswith(".pth") for path in fetched(hub)), "converted X-NeMo files count as there"
    load_models(plain, dtype="fp32")


def test_every_source_is_asked_before_anything_is_fetched(hub, tmp_path, capsys):
    dest = tmp_path / "xnemo"
    assert download(hub, dest) == 2  # no token for the gated VAE
    assert f"{SVD} is gated" in error_line(capsys)
    assert fetched(hub) == [] and not dest.exists()


def test_a_hub_file_stopped_midway_resumes_in_the_next_run_and_leaves_no_stale_file(hub, tmp_path):
    from xnemo_core.download import download as fetch_model

    encoder = f"/{IMAGE_VARIATIONS}/resolve/main/image_encoder/model.safetensors"

    def stop_midway(name, done, total):
        if name == "model.safetensors" and done > 0:
            raise Interrupted

    dest = tmp_path / "xnemo"
    (dest / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (dest / ".cache" / "huggingface" / "download" / "old.incomplete").write_bytes(b"from a killed run")
    with pytest.raises(Interrupted):
        fetch_model(dest, ("image_encoder",), report=stop_midway, say=lambda line: None)
    fetch_model(dest, ("image_encoder",), say=lambda line: None)
    first, resumed = hub.gets(encoder)
    assert first is None and int(resumed.removeprefix("bytes=").rstrip("-")) > 0
    target = dest / "sd-image-variations-diffusers" / "image_encoder" / "model.safetensors"
    assert target.read_bytes() == hub.files[encoder]
    leftovers = [p for p in dest.rglob("*") if p.is_file() and p.suffix in (".partial", ".incomplete", ".part")]
    assert leftovers == [] and not (dest / ".cache").exists()


@pytest.mark.parametrize(
    "case, said",
    [
        ("hub 500", "the Hugging Face Hub answered HTTP 500"),
        ("offline", "HF_HUB_OFFLINE is set"),
        ("mirror 404", "HTTP 404 (the server has no such file); check the URL given for X-NeMo's files"),
    ],
)
def test_each_failure_says_what_happened(hub, tmp_path, monkeypatch, capsys, case, said):
    if case == "hub 500":
        hub.status[f"/{IMAGE_VARIATIONS}/resolve/main/image_encoder/config.json"] = 500
    elif case == "offline":
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    else:
        hub.status["/release/xnemo_motion_encoder.pth"] = 404
    assert download(hub, tmp_path / "xnemo", "--token", TOKEN) == 2
    error = error_line(capsys)
    assert said in error and "no network" not in error and "resume" not in error, error
    assert fetched(hub) == []


def test_fetched_files_get_the_users_file_mode(hub, tmp_path):
    from xnemo_core.download.sources import _fetch_from_drive
    from xnemo_core.download.transfer import transfer

    previous = os.umask(0o022)
    try:
        through_gdown = _fetch_from_drive(f"{hub.url}/release/xnemo_motion_encoder.pth", tmp_path / "a.pth", None)
        ours = transfer(f"{hub.url}/release/xnemo_motion_encoder.pth", tmp_path / "b.pth")
    finally:
        os.umask(previous)
    assert [oct(path.stat().st_mode & 0o777) for path in (through_gdown, ours)] == ["0o644", "0o644"]


def test_an_empty_folder_is_not_listed_as_a_model(models_root):
    from nodes.comfy_bridge import model_choices

    (models_root / "empty").mkdir()
    (models_root / "held").mkdir()
    (models_root / "held" / "xnemo_vae.safetensors").write_bytes(b"")
    assert "empty" not in model_choices() and "held" in model_choices()


def fetched_names(hub: FakeHub) -> list[str]:
    return sorted(path.rsplit("/", 1)[1] for method, path, _ in hub.requests if method == "GET")


def test_the_tiny_decoder_is_fetched_on_request_beside_the_model_and_the_summary_says_how_to_use_it(
    hub, tmp_path, capsys
):
    dest = tmp_path / "xnemo"
    assert download(hub, dest, "--token", TOKEN) == 0
    assert not any(name.startswith("taesd") for name in fetched_names(hub)), "only on request"
    hub.requests.clear()
    capsys.readouterr()
    assert main(["download", str(dest), "--parts", "tiny_decoder"]) == 0
    out = capsys.readouterr().out
    assert f"licence: {TAESD} (tiny decoder): MIT" in out
    assert fetched_names(hub) == TAESD_FILES
    summary = out.splitlines()[-1]
    assert summary.startswith(f"ready: {dest}") and summary.endswith(f"--tiny-decoder {dest / TAESD_FILES[0]}")
    load_tiny_autoencoder(dest / TAESD_FILES[1], dest / TAESD_FILES[0])
    load_models(dest, dtype="fp32")  # the model folder still loads with the extra files in it
    hub.requests.clear()
    assert main(["download", str(dest), "--parts", "tiny_decoder"]) == 0
    assert fetched_names(hub) == [] and "the tiny decoder (TAESD): already in" in capsys.readouterr().out


def test_with_convert_the_tiny_decoder_goes_straight_into_the_folder(hub, tmp_path):
    dest = tmp_path / "converted"
    assert download(hub, dest, "--token", TOKEN, "--convert", "--parts", "xnemo", "tiny_decoder") == 0
    converted = [f"xnemo_{part}.safetensors" for part in ("denoising_unet", "motion_encoder", "reference_unet")]
    assert sorted(p.name for p in dest.iterdir()) == sorted([*TAESD_FILES, *converted])
    assert [p.name for p in tmp_path.iterdir()] == ["converted"], "no staging folder left"


def test_a_damaged_tiny_decoder_already_there_is_named_before_anything_is_fetched(hub, tmp_path, capsys):
    dest = tmp_path / "vae_approx"
    dest.mkdir()
    (dest / TAESD_FILES[0]).write_bytes(b"<html>quota exceeded</html>")
    (dest / TAESD_FILES[1]).write_bytes(hub.files[f"/{TAESD}/resolve/main/{TAESD_FILES[1]}"])
    assert main(["download", str(dest), "--parts", "tiny_decoder"]) == 2
    err = capsys.readouterr().err
    assert f"a file failed the strict check: {dest / TAESD_FILES[0]}" in err and len(err.splitlines()) == 1
    assert hub.requests == []


def test_the_download_node_puts_taesd_where_comfyuis_load_vae_finds_it(hub, models_root):
    from test_nodes import run

    from nodes.download import TINY_DECODER

    result = run("DownloadXNeMoModel", **node_inputs(hub, parts=TINY_DECODER, name=""))
    vae_approx = models_root.parent / "vae_approx"
    assert sorted(p.name for p in vae_approx.iterdir()) == TAESD_FILES
    assert "pick 'taesd' in ComfyUI's Load VAE" in result["ui"]["text"][0]
    assert list(models_root.iterdir()) == [], "nothing in models/xnemo"


def test_the_tiny_decoder_alone_into_an_empty_folder_says_how_to_decode_with_it(hub, tmp_path, capsys):
    dest = tmp_path / "vae_approx"
    assert main(["download", str(dest), "--parts", "tiny_decoder"]) == 0
    decoder = dest / TAESD_FILES[0]
    summary = capsys.readouterr().out.splitlines()[-1]
    said = f"the tiny decoder (TAESD): {decoder} (loaded strictly); decode with it: animate … --tiny-decoder {decoder}"
    assert summary == said
    assert fetched_names(hub) == TAESD_FILES
