"""Reading weight files safely and loading them into modules strictly.

* Files are untrusted: safetensors are read as data, pickles (``.pth``/``.bin``/``.ckpt``) only
  through ``torch.load(weights_only=True)``, which refuses anything but tensors and containers.
* Loading is all-or-nothing: every key of the module must come from some file (computed
  buffers excepted), no file may carry keys the module lacks, shapes must agree, and weights must
  be finite floating-point numbers (a NaN weight would turn every frame black). Otherwise a
  :class:`CheckpointError` names the files and the keys, and the module is left untouched.
"""

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}
COMPUTED_BUFFER_SUFFIXES = ("pos_encoder.pe", "num_batches_tracked")
COMPUTED_BUFFER_NAMES = {"pe"}
OBSOLETE_KEY_SUFFIXES = ("position_ids",)  # old transformers CLIP checkpoints carry this buffer
_LISTED = 8
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTOCOL = b"\x80"  # the legacy format: a pickle, protocol 2 or later


class CheckpointError(ValueError):
    """A weight file that cannot be used, with what was expected instead."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file or a tensors-only pickle, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise CheckpointError(
        f"{path}: unknown weight format {path.suffix!r}; expected .safetensors or one of {sorted(PICKLE_SUFFIXES)}"
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for pickles)."""
    path = Path(path)
    return _read_header(path)[1] if path.suffix == ".safetensors" else {}


def read_keys(path: str | Path) -> list[str]:
    """The tensor names of a safetensors file, without reading the tensors."""
    return _read_header(Path(path))[0]


def _read_header(path: Path) -> tuple[list[str], dict[str, str]]:
    try:
        with safe_open(str(path), "pt") as handle:
            return list(handle.keys()), handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), "pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors file, perhaps truncated by an interrupted download ({error})"
        ) from None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    _check_pickle_format(path)
    try:
        loaded = _unpickle_tensors(path)
    except torch.serialization.pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds Python objects besides tensors, and such pickles are refused (loading one can run "
            "code); it is not the weight file expected here: download it again from its publisher"
        ) from None
    except Exception as error:  # torch.load fails in many ways on data that only starts like a checkpoint
        raise CheckpointError(
            f"{path}: not a readable PyTorch weight file, perhaps truncated ({_first_sentence(error)})"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return loaded


def _first_sentence(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text.split(". ", 1)[0]


def _check_pickle_format(path: Path) -> None:
    """Refuse a file that is no PyTorch checkpoint at all (neither the zip format nor the legacy
    pickle), e.g. a web page a browser saved under the checkpoint's name."""
    with path.open("rb") as handle:
        start = handle.read(64)
    if start.startswith(ZIP_MAGIC) or start.startswith(PICKLE_PROTOCOL):
        return
    text = start.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        what = "a web page (HTML), perhaps a download site's error or quota page saved under this name"
    elif not start:
        what = "an empty file"
    else:
        what = f"some other file (it begins with {start[:16]!r})"
    raise CheckpointError(f"{path}: is not a PyTorch checkpoint but {what}; download the real file again")


def _unpickle_tensors(path: Path):
    """``torch.load(weights_only=True)``, memory-mapped where the format allows: files of the
    legacy (pre-zip) format cannot be mapped and are read whole."""
    with path.open("rb") as handle:
        is_zip = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)


def _is_computed(key: str) -> bool:
    return key in COMPUTED_BUFFER_NAMES or key.endswith(COMPUTED_BUFFER_SUFFIXES)


def _listing(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LISTED])
    return shown + (f" … and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


Sources = list[tuple[str, dict[str, torch.Tensor]]]
"""Weights to load, in order, each with the name of the file it came from."""


def read_sources(files: list[str | Path]) -> Sources:
    return [(str(path), read_state_dict(path)) for path in files]


def load_into(
    module: nn.Module,
    sources: Sources,
    *,
    what: str,
    allow_missing: tuple[str, ...] = (),
    base: Sources = (),
) -> None:
    """Load ``sources`` (later ones override earlier ones) into ``module``, strictly.

    Args:
        what: the module's name for messages ("denoising UNet").
        allow_missing: weight groups that may be absent, named by a key part such as
            ``temporal_modules`` (their weights keep the module's own initialisation); a
            warning lists them.
        base: weights applied first whose extra keys are ignored, e.g. the image-UNet base
            under the denoiser's spatial layers.
    """
    _materialize(module)
    expected = module.state_dict()
    merged: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    problems = []
    layers = [(label, tensors, True) for label, tensors in base]
    layers += [(label, tensors, False) for label, tensors in sources]
    for label, tensors, is_base in layers:
        tensors = {k: v for k, v in tensors.items() if not k.endswith(OBSOLETE_KEY_SUFFIXES)}
        unexpected = [k for k in tensors if k not in expected]
        if unexpected and not is_base:
            problems.append(f"{label} has keys the {what} does not have: {_listing(unexpected)}")
        for key, tensor in tensors.items():
            if key in expected:
                merged[key], origin[key] = tensor, label
    mis_shaped, wrong_values, wrong_tables = [], [], []
    for key, tensor in merged.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            mis_shaped.append(
                f"{origin[key]}: {key} has shape {tuple(tensor.shape)}, the {what} expects {tuple(expected[key].shape)}"
            )
        elif expected[key].is_floating_point() and not tensor.is_floating_point():
            wrong_values.append(f"{origin[key]}: {key} holds {tensor.dtype} values, the {what} expects floating point")
        elif tensor.is_floating_point() and not torch.isfinite(tensor).all():
            wrong_values.append(f"{origin[key]}: {key} holds NaN or infinite values (a damaged file?)")
        elif _is_computed(key) and not key.endswith("num_batches_tracked"):
            # Files may store it rounded, also to a lower precision than their own (fp16 → fp32).
            tolerance = 2 * max(torch.finfo(torch.float16).eps, torch.finfo(tensor.dtype).eps)
            if not torch.allclose(tensor.float(), expected[key].float(), atol=tolerance):
                wrong_tables.append(f"{origin[key]}: {key} differs from the fixed table it must hold")
    problems += mis_shaped[:_LISTED] + wrong_values[:_LISTED] + wrong_tables
    if len(mis_shaped) > _LISTED:
        problems.append(f"… and {len(mis_shaped) - _LISTED} more tensors of other shapes (a model of another size?)")
    missing = [k for k in expected if k not in merged and not _is_computed(k)]
    tolerated = [k for k in missing if any(f"{group}." in k for group in allow_missing)]
    missing = [k for k in missing if k not in tolerated]
    if missing:
        labels = ", ".join(label for label, _ in sources) or "no file"
        problems.append(f"the {what} needs keys that {labels} lack: {_listing(missing)}")
    if problems:
        raise CheckpointError(f"cannot load the {what}:\n  " + "\n  ".join(problems))
    if tolerated:
        warnings.warn(
            f"{what}: {len(tolerated)} weights missing from the files keep their initial values "
            f"(allowed): {_listing(tolerated)}",
            stacklevel=2,
        )
    module.load_state_dict(merged, strict=False, assign=True)


def _materialize(module: nn.Module) -> None:
    """Give a module built on the meta device real (uninitialised) storage and computed buffers."""
    if not any(t.is_meta for t in module.state_dict().values()):
        return
    unrecoverable = [
        name
        for name, child in module.named_modules()
        if child._non_persistent_buffers_set and not hasattr(child, "reset_computed_buffers")
    ]
    if unrecoverable:
        raise ValueError(f"build this module on a real device: {unrecoverable} hold computed buffers")
    module.to_empty(device="cpu")
    for child in module.modules():
        if hasattr(child, "reset_computed_buffers"):
            child.reset_computed_buffers()


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write contiguous tensors with JSON-encoded metadata values."""
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
