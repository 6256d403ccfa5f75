"""Files stay inside their folders and appear only once complete."""

import os

import numpy as np
import pytest
import torch

from xnemo_core.files import (
    OutsideFolderError,
    copy_if_missing,
    inside,
    replacing,
    replacing_folder,
)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "output"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "out_link").symlink_to(tmp_path / "elsewhere")
    (root / "in_link").symlink_to(root / "sub")
    return root


@pytest.mark.parametrize("name", ["../escaped", "sub/../../escaped", "/tmp/escaped", "out_link/motion"])
def test_names_leading_outside_the_folder_are_refused(folder, name):
    with pytest.raises(OutsideFolderError, match="leads outside the folder"):
        inside(folder, name)


@pytest.mark.parametrize("name", ["motion", "sub/motion", "sub/../motion", "in_link/motion", "new/deeper/motion"])
def test_names_within_the_folder_are_kept(folder, name):
    path = inside(folder, name)
    assert folder.resolve() in path.parents


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with replacing(target) as temporary:
        assert temporary.suffix == ".mp4" and temporary.parent == tmp_path
        temporary.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # the permissions of a plainly created file


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "frames"
    with pytest.raises(RuntimeError), replacing_folder(target) as temporary:
        (temporary / "frame_00000.png").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_target_under_a_file_is_refused_before_writing(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"), replacing(tmp_path / "plain" / "a.mp4"):
        pass


def test_copies_never_overwrite_nor_follow_a_symlink(tmp_path):
    source, outside = tmp_path / "source.png", tmp_path / "outside.png"
    source.write_bytes(b"demo")
    outside.write_bytes(b"precious")
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "linked.png").symlink_to(outside)
    (inputs / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (inputs / "kept.png").write_bytes(b"user's")
    assert not copy_if_missing(source, inputs / "linked.png")
    assert not copy_if_missing(source, inputs / "dangling.png")
    assert not copy_if_missing(source, inputs / "kept.png")
    assert outside.read_bytes() == b"precious" and not (tmp_path / "nowhere.png").exists()
    assert (inputs / "kept.png").read_bytes() == b"user's"
    assert copy_if_missing(source, inputs / "fresh.png") and (inputs / "fresh.png").read_bytes() == b"demo"


def test_every_kind_of_result_gets_the_permissions_of_a_plainly_created_file(tmp_path):
    """Writers that replace the temporary file (safetensors does) must not bring back mkstemp's 0600."""
    from xnemo_core.motion import MotionLatent, save_motion
    from xnemo_core.video import write_image, write_video

    mask = os.umask(0)
    os.umask(mask)
    written = [
        save_motion(MotionLatent(torch.zeros(2, 32, 16), model_id="me2-x"), tmp_path / "m.safetensors"),
        write_video(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), np.uint8), 10),
        write_video(tmp_path / "v.gif", np.zeros((2, 16, 16, 3), np.uint8), 10),
        write_image(tmp_path / "i.png", np.zeros((16, 16, 3), np.uint8)),
    ]
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name
