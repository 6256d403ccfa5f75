"""Bad inputs a new user or an adversarial tester tries: never a lost file, never a black video
called a success, one clear line instead of a traceback (CLI cases through the CLI, node cases
through the node functions)."""

import json
import re
import os
import shutil
import signal
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import run_fresh
from safetensors import safe_open
from safetensors.torch import save_file
from test_cli import animate_args, inputs  # noqa: F401 (a fixture)
from test_nodes import (  # noqa: F401 (fixtures)
    animate_inputs,
    blend_inputs,
    driving,
    extracted,
    model,
    monkeypatch_module,
    motion,
    run,
)

from xnemo_core import bundled, files, portrait, recipes
from xnemo_core.__main__ import main
from xnemo_core.checkpoints import CheckpointError
from xnemo_core.convert import write_bundle, write_parts
from xnemo_core.face import FaceNotFoundError, _followed_face
from xnemo_core.finite import NonFiniteError
from xnemo_core.loading import load_models
from xnemo_core.motion import FORMAT, MotionLatent, load_motion, smooth
from xnemo_core.pipeline import XNeMoPipeline
from xnemo_core.testing.synthetic_weights import preset_models
from xnemo_core.video import read_frames, read_portrait, write_video


def with_tensor(path: Path, key: str, change) -> None:
    """Rewrite one tensor of a safetensors file in place, keeping its metadata."""
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    tensors[key] = change(tensors[key])
    save_file(tensors, str(path), metadata=metadata)


@pytest.fixture()
def model_copy(tiny_model_folder, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_folder, tmp_path / "model"))


def animate(models, reference, driving, out, *extra) -> int:
    return main(animate_args(models, reference, driving, out, "--crop", "none", *extra))


# Data loss


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tiny_model_folder, inputs, tmp_path, capsys):
    driving = tmp_path / "clip.mp4"
    shutil.copy(inputs / "driving.mp4", driving)
    (tmp_path / "link.mp4").symlink_to(driving)
    os.link(driving, tmp_path / "hard.mp4")
    kept = driving.read_bytes()
    for out in (driving, tmp_path / "link.mp4", tmp_path / "hard.mp4", tmp_path / "." / "clip.mp4"):
        assert animate(tiny_model_folder, inputs / "portrait.png", driving, out) == 2
        assert "an output never replaces an input" in capsys.readouterr().err
    assert driving.read_bytes() == kept
    assert animate(tiny_model_folder, inputs / "portrait.png", driving, inputs / "portrait.png") == 2


def test_a_frame_folder_that_is_the_driving_folder_is_refused_and_its_frames_kept(
    tiny_model_folder, inputs, tmp_path, capsys
):
    frames = tmp_path / "frames"
    write_video(frames, np.zeros((3, 64, 64, 3), np.uint8))
    assert animate(tiny_model_folder, inputs / "portrait.png", frames, frames) == 2
    assert "an output never replaces an input" in capsys.readouterr().err
    assert len(list(frames.glob("frame_*.png"))) == 3


def test_outputs_inside_the_model_or_the_shipped_files_are_refused(tiny_model_folder, inputs, capsys):
    demo_clip = bundled.DEMO_DRIVING.read_bytes()
    assert main(["animate", "--out", str(bundled.DEMO_DRIVING)]) == 2
    assert main(["animate", "--out", str(bundled.BUNDLED / "demo" / "new.mp4")]) == 2
    assert animate(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", tiny_model_folder / "x.mp4") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "never written to" in err
    assert bundled.DEMO_DRIVING.read_bytes() == demo_clip and not (bundled.BUNDLED / "demo" / "new.mp4").exists()


@pytest.mark.parametrize(
    "part, key, value",
    [
        ("denoising_unet", "conv_out.weight", float("nan")),
        ("vae", "decoder.conv_out.weight", float("nan")),
        ("reference_unet", "conv_in.weight", float("inf")),
    ],
)
def test_non_finite_weights_are_refused_at_load_naming_file_and_key(
    model_copy, inputs, tmp_path, capsys, part, key, value
):
    path = model_copy / f"xnemo_{part}.safetensors"
    with_tensor(path, key, lambda tensor: tensor.index_put_((torch.tensor(0),), torch.tensor(value)))
    out = tmp_path / "out.mp4"
    assert animate(model_copy, inputs / "portrait.png", inputs / "driving.mp4", out) == 2
    err = capsys.readouterr().err
    assert f"{path}: {key} holds NaN or infinite values" in err and "Traceback" not in err
    assert not out.exists()


def test_integer_tensors_in_a_bundle_are_refused_naming_the_key(tiny_models, tmp_path):
    bundle = write_bundle(tiny_models, tmp_path / "model.safetensors")
    with_tensor(bundle, "motion_encoder.final_proj.weight", lambda tensor: tensor.long())
    with pytest.raises(CheckpointError, match=r"final_proj\.weight holds torch\.int64 values.*floating point"):
        load_models(bundle)


@pytest.mark.parametrize("module, stage", [("denoising_unet", "the denoising UNet"), ("vae", "the VAE decoder")])
def test_the_pipeline_refuses_non_finite_results_naming_the_stage(module, stage):
    models = preset_models("tiny", device="cpu")
    weight = (models.denoising_unet if module == "denoising_unet" else models.vae.decoder).conv_out.weight
    weight.data[0] = float("nan")  # as a VAE handed over by ComfyUI could be: past our loader's checks
    pipeline = XNeMoPipeline(models)
    image = np.full((64, 64, 3), 128, np.uint8)
    settings = portrait.animation_settings(recipes.OFFICIAL, size=64, steps=1, context_frames=2, context_overlap=0)
    with pytest.raises(NonFiniteError, match=f"{stage} produced NaN or infinite values, so no frame was written"):
        pipeline.animate(image, image, torch.zeros(2, 32, 16), settings)


def test_an_output_place_that_cannot_be_written_is_refused_before_work_naming_the_users_path(inputs, tmp_path, capsys):
    out = Path("/proc/xnemo_result.mp4")
    args = animate_args(tmp_path / "no_model_here", inputs / "portrait.png", inputs / "driving.mp4", out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out}: cannot be written here" in err and ".partial" not in err and "no_model_here" not in err


def test_a_failed_write_names_the_users_path_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def failing_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(files.OutputError, match="result.mp4: cannot be written here \\(No space left on device\\)"):
        write_video(tmp_path / "result.mp4", np.zeros((2, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_the_output_check_leaves_no_folders_or_files_behind(tmp_path):
    files.check_output_path(tmp_path / "new" / "deeper" / "result.mp4")
    files.check_output_path(tmp_path / "frames", folder=True)
    assert list(tmp_path.iterdir()) == []


# Clear errors


def test_ctrl_c_is_one_line_and_exit_130(inputs, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("xnemo_core.loading.load_models", interrupted)
    assert main(["animate", "--out", str(tmp_path / "x.mp4"), "--frames", "2"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def default_signals():
    """The signal dispositions of a terminal's foreground job, whatever started the tests (``nohup``
    ignores SIGHUP, a shell's ``&`` SIGINT), restored afterwards."""
    defaults = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
        signal.SIGHUP: signal.SIG_DFL,
    }
    inherited = {number: signal.signal(number, handler) for number, handler in defaults.items()}
    yield
    for number, handler in inherited.items():
        signal.signal(number, handler)


@pytest.mark.parametrize(
    "stop, status, said",
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGHUP, 129, "hung up"), (signal.SIGINT, 130, "interrupted")],
)
@pytest.mark.usefixtures("default_signals")
def test_a_stop_signal_during_the_final_write_leaves_no_partial_file(tmp_path, capsys, monkeypatch, stop, status, said):
    import xnemo_core.video as video

    def stopped_while_writing(path, *args):
        Path(path).write_bytes(b"half a video")
        os.kill(os.getpid(), stop)

    monkeypatch.setattr(video, "_write_video_file", stopped_while_writing)
    assert main(["animate", "--out", str(tmp_path / "x.mp4"), "--frames", "2", "--steps", "2"]) == status
    assert capsys.readouterr().err.splitlines()[-1] == f"{said}; nothing was written"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


@pytest.mark.parametrize("moment", ["made", "renamed", "removed"])
@pytest.mark.usefixtures("default_signals")
def test_a_signal_while_the_temporary_file_is_made_renamed_or_removed_leaves_nothing(tmp_path, monkeypatch, moment):
    made = files.tempfile.mkstemp

    def signal_after(function):
        def call(*args, **kwargs):
            result = function(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
            return result

        return call

    def signal_before(function):
        def call(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return function(*args, **kwargs)

        return call

    if moment == "made":
        monkeypatch.setattr(files.tempfile, "mkstemp", signal_after(made))
    elif moment == "renamed":
        monkeypatch.setattr(files, "user_mode", signal_after(files.user_mode))  # called just before the rename
    with pytest.raises(KeyboardInterrupt):
        with files.replacing(tmp_path / "x.mp4") as temporary:
            temporary.write_bytes(b"a video")
            if moment == "removed":
                monkeypatch.setattr(Path, "unlink", signal_before(Path.unlink))
                raise KeyboardInterrupt
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_a_background_run_during_the_final_decode(tmp_path):
    """A job started with ``&`` inherits SIGINT ignored; ``kill -INT`` must still stop it."""
    result = run_fresh(
        f"""
        import os, signal, sys
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        import xnemo_core.pipeline as pipeline
        decode = pipeline.decode_video

        def decode_then_interrupted(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return decode(*args, **kwargs)

        pipeline.decode_video = decode_then_interrupted
        from xnemo_core.cli import main
        sys.exit(main(["animate", "--out", {str(tmp_path / "x.mp4")!r}, "--frames", "2", "--steps", "1"]))
        """
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == "interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_while_the_temporary_file_is_made_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(handle):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "x.mp4", np.zeros((1, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_the_evaluation_regressor_shows_its_progress(capsys):
    from xnemo_core.evaluation import train_regressor

    train_regressor(size=32, steps=2, batch=2)
    assert "training the metrics' regressor" in capsys.readouterr().err


def test_an_animation_past_the_available_memory_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(portrait, "available_memory", lambda: 2**20)
    assert main(["animate", "--out", str(tmp_path / "x.mp4"), "--size", "2048", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB of memory and 0.0 GiB are available" in err and "denoising" not in err


def motion_file(path: Path, tokens=None, boxes=None, **metadata) -> Path:
    tensors = {"tokens": torch.zeros(2, 32, 16) if tokens is None else tokens}
    if boxes is not None:
        tensors["boxes"] = boxes
    stamp = {"format": FORMAT, "model_id": "me2-x", "fps": "25.0", "source_size": "[64, 48]"}
    save_file(tensors, str(path), metadata=stamp | metadata)
    return path


@pytest.mark.parametrize(
    "content, message",
    [
        (dict(tokens=torch.zeros(2, 32, 16, dtype=torch.int32)), "floating-point"),
        (dict(tokens=torch.zeros(2, 32, 16, dtype=torch.bool)), "floating-point"),
        (dict(tokens=torch.zeros(0, 32, 16)), "frames ≥ 1"),
        (dict(fps="1e308"), "at most 1000"),
        (dict(fps="9" * 400), "at most 1000"),
        (dict(source_size="[1, 2, 3]"), "source size must be"),
        (dict(source_size="[-4, 5]"), "source size must be"),
        (dict(boxes=torch.zeros(3, 4)), "face boxes must be finite numbers of shape \\(2, 4\\)"),
        (dict(boxes=torch.zeros(2, 5)), "face boxes"),
    ],
)
def test_every_motion_file_field_is_checked_with_the_files_name(tmp_path, content, message):
    path = motion_file(tmp_path / "m.safetensors", **content)
    with pytest.raises(ValueError, match=f"m.safetensors: not a valid motion file: .*{message}"):
        load_motion(path)


def test_smoothing_is_bounded_in_the_core_and_non_finite_weights_get_the_right_advice():
    motion = MotionLatent(torch.zeros(4, 32, 16), "me2-x")
    for sigma, message in ((1e9, "above 100 frames"), (float("nan"), "sigma must be a finite number")):
        with pytest.raises(ValueError, match=message):
            smooth(motion, sigma)


@pytest.mark.parametrize("mode", ["interpolate", "intensity"])
def test_a_non_finite_blend_weight_is_refused_as_such(motion, mode):
    latent, _ = motion
    for weight, said in ((float("nan"), "must be a finite number, got nan"), (1e308, "between -10 and 10, got 1e+308")):
        with pytest.raises(
            ValueError, match=f"MotionLatentBlend \\({mode}\\): the blend's .* {re.escape(said)}"
        ) as error:
            run("MotionLatentBlend", **blend_inputs(latent, mode, motion_b=latent) | {"weight": weight})
        assert "extract the motion again" not in str(error.value)


def test_an_unknown_blend_mode_is_refused_with_the_modes(motion):
    latent, _ = motion
    with pytest.raises(ValueError, match="unknown mode 'mix'; choose one of interpolate, relative, intensity, smooth"):
        run("MotionLatentBlend", **blend_inputs(latent, "mix", motion_b=latent))


def test_extract_takes_grey_and_rgba_images_as_comfyui_makes_them(model):
    grey = torch.rand(3, 48, 40, 1, generator=torch.Generator().manual_seed(0))
    from_grey = run("ExtractMotionLatent", model=model, frames=grey, crop="none", fps=12.0)[0]
    from_rgb = run("ExtractMotionLatent", model=model, frames=grey.expand(-1, -1, -1, 3), crop="none", fps=12.0)[0]
    assert torch.equal(from_grey.tokens, from_rgb.tokens)
    opaque = torch.cat([grey.expand(-1, -1, -1, 3), torch.ones_like(grey)], dim=-1)
    from_rgba = run("ExtractMotionLatent", model=model, frames=opaque, crop="none", fps=12.0)[0]
    assert torch.equal(from_rgba.tokens, from_rgb.tokens)


def test_nan_pixels_are_refused_by_extract_and_animate(model, motion):
    frames = torch.rand(3, 48, 40, 3)
    frames[1, 2, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="driving frames: the IMAGE holds NaN or infinite pixels"):
        run("ExtractMotionLatent", model=model, frames=frames, crop="none", fps=12.0)
    latent, _ = motion
    with pytest.raises(ValueError, match="reference: the IMAGE holds NaN or infinite pixels"):
        run("AnimatePortrait", **animate_inputs(model, frames[1:2], latent))


def test_missing_parts_are_named_before_any_shape_is_compared(tiny_model_folder, inputs, tmp_path, capsys):
    only_motion = tmp_path / "only_motion"
    only_motion.mkdir()
    shutil.copy(tiny_model_folder / "xnemo_motion_encoder.safetensors", only_motion)
    with pytest.raises(CheckpointError, match="lacks 2 part") as error:
        load_models(only_motion)
    assert "denoising UNet: xnemo_denoising_unet.pth" in str(error.value) and "shape" not in str(error.value)
    no_vae = Path(shutil.copytree(tiny_model_folder, tmp_path / "no_vae"))
    (no_vae / "xnemo_vae.safetensors").unlink()
    assert animate(no_vae, inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "x.mp4") == 2
    err = capsys.readouterr().err
    assert "lacks 1 part(s):\n  VAE: stable-video-diffusion-img2vid-xt/vae/" in err and "huggingface.co" in err
    models = load_models(no_vae)
    with pytest.raises(ValueError, match="animation needs a CLIP image encoder and a VAE; the model has no VAE \\("):
        XNeMoPipeline(models)


def test_an_rgba_reference_is_composited_onto_white_and_said(tiny_model_folder, inputs, tmp_path, capsys):
    import cv2

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (0, 0, 255, 255)  # an opaque red square (BGRA) on a transparent ground
    cv2.imwrite(str(tmp_path / "cutout.png"), rgba)
    image, note = read_portrait(tmp_path / "cutout.png")
    assert image[0, 0].tolist() == [255, 255, 255] and image[32, 32].tolist() == [255, 0, 0]
    assert animate(tiny_model_folder, tmp_path / "cutout.png", inputs / "driving.mp4", tmp_path / "x.mp4") == 0
    assert f"note: {note}" in capsys.readouterr().err and "filled with white" in note


def test_standard_output_is_no_output_path(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(animate_args(tmp_path / "m", inputs / "portrait.png", inputs / "driving.mp4", "-")) == 2
    assert "'-' is not an output path" in capsys.readouterr().err and not (tmp_path / "-").exists()


def test_the_recipe_follows_the_model_not_its_path(tmp_path):
    copy = Path(shutil.copytree(bundled.MODEL, tmp_path / "renamed"))
    assert recipes.recommended(copy) == recipes.OFFICIAL | bundled.MODEL_SETTINGS
    assert load_models(copy).recipe == bundled.MODEL_SETTINGS
    converted = write_parts(load_models(copy), tmp_path / "converted")[0].parent
    assert recipes.recommended(converted)["size"] == 128  # conversion keeps it
    with_tensor(copy / "xnemo_vae.safetensors", "decoder.conv_out.bias", lambda tensor: tensor)  # untouched recipe
    denoiser = copy / "xnemo_denoising_unet.safetensors"
    with safe_open(str(denoiser), "pt") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(denoiser), metadata=metadata | {"recipe": json.dumps({"size": "huge"})})
    with pytest.raises(ValueError, match="damaged 'recipe' metadata"):
        recipes.recommended(copy)


@pytest.mark.parametrize(
    "recipe, said",
    [({"size": 7}, "size 7"), ({"denoise": 5}, "denoise 5"), ({"crop": "sideways"}, "crop 'sideways'")],
)
def test_unusable_recipe_values_name_the_model_file_not_a_flag(tmp_path, capsys, recipe, said):
    copy = Path(shutil.copytree(bundled.MODEL, tmp_path / "model"))
    denoiser = copy / "xnemo_denoising_unet.safetensors"
    with safe_open(str(denoiser), "pt") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(denoiser), metadata=metadata | {"recipe": json.dumps(recipe)})
    assert main(["animate", "--models", str(copy), "--out", str(tmp_path / "x.mp4"), "--frames", "2"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"error: {denoiser}: the model's 'recipe' metadata has an unusable {said}"), error
    assert "--" not in error and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(
    "flag, suffix", [("--out", ".mp4"), ("--reference", ".png"), ("--models", ""), ("--motion", ".st")]
)
def test_paths_longer_than_the_file_system_allows_are_one_line(tmp_path, capsys, flag, suffix):
    path = f"{tmp_path / ('a' * 300)}{suffix}"
    flags = {"--out": str(tmp_path / "x.mp4")} | {flag: path}
    assert main(["animate", "--frames", "2", *[item for pair in flags.items() for item in pair]]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error == [f"error: {path}: a name in this path is longer than the file system allows; choose a shorter one"]


def test_an_image_claiming_more_pixels_than_opencv_reads_is_one_line(tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(9))) + chunk(b"IEND", b"")
    )
    assert main(["animate", "--reference", str(huge), "--out", str(tmp_path / "x.mp4"), "--frames", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {huge}: its header claims more pixels than OpenCV reads (1073741824, OPENCV_IO_MAX_IMAGE_PIXELS); "
        "give a smaller or re-saved image"
    ]


def test_face_flags_that_do_nothing_with_crop_none_are_said(tiny_model_folder, inputs, tmp_path, capsys):
    args = ["--face-index", "3", "--face-model", "/missing.onnx", "--frames", "2"]
    assert animate(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "x.mp4", *args) == 0
    err = capsys.readouterr().err
    assert "--face-index has no effect with --crop none" in err
    assert "--face-model has no effect with --crop none (and /missing.onnx does not exist)" in err


def test_no_face_at_all_is_said_as_such_whatever_the_index():
    with pytest.raises(FaceNotFoundError, match="no face found in any of the 3 driving frames"):
        _followed_face([np.zeros((0, 4))] * 3, 9)
    with pytest.raises(FaceNotFoundError, match="use an index below 2"):
        _followed_face([np.zeros((2, 4))] * 3, 5)


def test_the_bundled_models_cartoon_note_is_a_hint():
    assert (
        bundled.OUTSIDE_ITS_WORLD.startswith("hint:")
        and "if this reference is a real photo" in bundled.OUTSIDE_ITS_WORLD
    )


# What a newcomer stumbles on


def test_help_imports_neither_torch_nor_diffusers():
    script = """
        import sys
        from xnemo_core.__main__ import main
        for command in ([], ["animate"], ["evaluate"]):
            try:
                main([*command, "--help"])
            except SystemExit:
                pass
        print("heavy:", sorted({"torch", "diffusers", "cv2"} & set(sys.modules)))
    """
    result = run_fresh(script)
    assert result.returncode == 0 and "heavy: []" in result.stdout


def test_a_run_says_first_what_runs(tmp_path, capsys):
    assert main(["animate", "--out", str(tmp_path / "x.mp4"), "--frames", "2", "--steps", "5"]) == 0
    err = capsys.readouterr().err
    plan = err.index("animating with")
    assert plan < err.index("denoising")
    assert "128×128, 4 of 5 steps (denoise 0.8), preset exact (ddim), cfg 2.5, seed 42; cpu, fp32, compile off" in err


def test_one_step_is_said_in_the_singular_and_slow_cpu_choices_get_a_note(tmp_path, capsys):
    args = ["--frames", "2", "--steps", "1", "--denoise", "1", "--dtype", "bf16", "--compile", "off", "--device", "cpu"]
    assert main(["animate", "--out", str(tmp_path / "x.mp4"), *args]) == 0
    err = capsys.readouterr().err
    assert "128×128, 1 step, preset" in err and "1 steps" not in err
    assert "note: --dtype bf16 on a CPU runs several times slower than fp32" in err
    with pytest.raises(SystemExit):  # --help only: the note is about --compile on, tested without compiling
        main(["animate", "--compile", "on", "--help"])
    from xnemo_core.cli.animate import _flag_notes

    flags = type("Flags", (), {"face_index": None, "face_model": None, "dtype": None, "compile": "on"})
    assert _flag_notes(flags, "detect", torch.device("cpu")) == [
        "--compile on a CPU spends minutes compiling before the first frame, for little or no gain"
    ]
    assert _flag_notes(flags, "detect", torch.device("cuda")) == []


@pytest.mark.parametrize("command", ["animate", "convert", "download"])
def test_a_saved_web_page_in_place_of_a_checkpoint_is_one_line_from_every_command(
    official_layout, tmp_path, capsys, command
):
    model = Path(shutil.copytree(official_layout, tmp_path / "model"))
    (model / "xnemo_motion_encoder.pth").write_text("<!DOCTYPE html><html>Google Drive - Quota exceeded</html>")
    args = {
        "animate": ["animate", "--models", str(model), "--out", str(tmp_path / "x.mp4"), "--frames", "2"],
        "convert": ["convert", str(model), str(tmp_path / "converted")],
        "download": ["download", str(tmp_path / "dest"), "--parts", "xnemo", "--xnemo-from", str(model)],
    }[command]
    if command == "download":  # the UNet config would come from the Hub: it is there already
        shutil.copytree(model / "sd-image-variations-diffusers", tmp_path / "dest" / "sd-image-variations-diffusers")
    assert main(args) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert line.startswith("error: ") and err.count("error: ") == 1 and "Traceback" not in err
    assert "xnemo_motion_encoder.pth: is not a PyTorch checkpoint but a web page (HTML)" in line
    assert "the motion encoder is published at https://drive.google.com" in line and "weights_only" not in line


def test_videos_are_h264_yuv420p_and_keep_the_driving_sound_when_asked(tiny_model_folder, inputs, tmp_path, capsys):
    voiced = tmp_path / "voiced.mp4"
    with av.open(str(voiced), "w") as container:
        video = container.add_stream("h264", rate=10)
        video.width = video.height = 64
        sound = container.add_stream("aac", rate=16000)
        for frame in np.zeros((10, 64, 64, 3), np.uint8):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        tone = np.sin(np.arange(16000) / 5).astype(np.float32)[None]
        samples = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
        samples.rate = 16000
        container.mux(sound.encode(samples))
        container.mux(sound.encode())
    out = tmp_path / "out.mp4"
    assert animate(tiny_model_folder, inputs / "portrait.png", voiced, out, "--frames", "4", "--audio") == 0
    with av.open(str(out)) as result:
        video, sound = result.streams.video[0], result.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert 0.3 <= float(sound.duration * sound.time_base) <= 0.55  # 4 frames at 10 fps
    assert animate(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", out, "--audio") == 2
    assert "has no sound to keep" in capsys.readouterr().err


def test_odd_sized_frames_are_written_as_h264(tmp_path):
    write_video(tmp_path / "odd.mp4", np.zeros((2, 33, 45, 3), np.uint8))
    assert read_frames(tmp_path / "odd.mp4")[0].shape == (2, 34, 46, 3)


def test_the_cli_animates_from_a_saved_motion_file(tmp_path, tiny_model_folder, inputs, capsys):
    out = tmp_path / "x.mp4"
    assert main(["animate", "--motion", str(bundled.DEMO_MOTION), "--out", str(out), "--frames", "3"]) == 0
    assert read_frames(out)[0].shape == (3, 128, 128, 3)
    capsys.readouterr()
    args = ["--models", str(tiny_model_folder), "--reference", str(inputs / "portrait.png"), "--crop", "none"]
    assert main(["animate", *args, "--motion", str(bundled.DEMO_MOTION), "--out", str(out), "--size", "64"]) == 2
    assert "another motion encoder" in capsys.readouterr().err


def test_pip_install_gives_the_library_and_the_xnemo_command(tmp_path):
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools", reason="builds without isolation, with the environment's setuptools")
    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"  # setuptools builds in the source
    for folder in ("xnemo_core", "bundled"):
        shutil.copytree(root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*command, str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "xnemo_core/__main__.py" in names and "xnemo_core/train/recipes/synthetic128_stage1.yaml" in names
    model = "xnemo_core/bundled_files/models/xnemo-synthetic-128/xnemo_denoising_unet.safetensors"
    assert model in names and "xnemo_core/bundled_files/demo/driving.mp4" in names
    assert not any(name.startswith(("nodes/", "tests/")) for name in names)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "xnemo = xnemo_core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
