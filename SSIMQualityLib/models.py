"""The network: a torchvision ResNet with one input channel and a bounded SSIM head.

Checkpoints are plain dicts of tensors and numbers, saved with ``torch.save``
and loaded with ``torch.load(weights_only=True)`` (no pickled code runs), and
checked against a SHA-256 listed in the model catalogue.
"""
from __future__ import annotations

import hashlib
import io
import os
import json
from pathlib import Path
from typing import List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadModelFileError
from .labels import all_classes

ARCHITECTURES = ("resnet18", "resnet101")
FORMAT_VERSION = 1


class SSIMRegressor(nn.Module):
    """ResNet-18 / ResNet-101 (torchvision) predicting SSIM in [0, 1] from one slice.

    Parameters
    ----------
    arch : {"resnet18", "resnet101"}
    input_size : int
        Resolution the network works at.  Inputs always come as 256 × 256
        (the project's convention); a smaller ``input_size`` is reached by
        area averaging inside the model, which makes CPU training affordable.

    Input: (B, 1, 256, 256) normalised slices.  Output: (B,) predicted SSIM,
    sigmoid-bounded to [0, 1].
    """

    def __init__(self, arch: str = "resnet18", input_size: int = 256):
        super().__init__()
        import torchvision

        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
        self.arch = arch
        self.input_size = int(input_size)
        net = getattr(torchvision.models, arch)(weights=None, num_classes=1)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return torch.sigmoid(self.net(x)[:, 0].float())

    def config(self) -> dict:
        return {"arch": self.arch, "input_size": self.input_size}


def build_model(arch: str = "resnet18", input_size: int = 256) -> SSIMRegressor:
    """A freshly initialised model."""
    return SSIMRegressor(arch, input_size)


def classify(predicted: torch.Tensor) -> dict:
    """Classes of every scheme from predicted SSIM (classification derived from regression)."""
    return all_classes(predicted.detach().cpu().numpy())


def sha256_of(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: Union[str, Path], model: SSIMRegressor, extra: Optional[dict] = None) -> str:
    """Save weights + config (+ plain extra data) atomically; returns the file's SHA-256."""
    from .outputs import atomic_write

    payload = {"format_version": FORMAT_VERSION, "config": model.config(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if extra:
        payload.update(extra)
    with atomic_write(path, force=True) as tmp:
        torch.save(payload, tmp)
    return sha256_of(path)


def read_checkpoint(path: Union[str, Path], sha256: Optional[str] = None) -> dict:
    """Load a checkpoint dict safely, with clear errors for every way it can be wrong."""
    p = Path(path)
    name = str(path)
    if not p.is_file():
        raise BadModelFileError("model file does not exist", name, "check the path or use the bundled model")
    if sha256 is not None:
        import re

        if not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):  # load_model(path, "cpu") read "cpu" as one
            from .errors import BadParameterError

            raise BadParameterError(f"sha256 must be 64 hexadecimal digits, got {str(sha256)[:20]!r}",
                                    hint="give the checksum by name: sha256=...; the device: device=...")
        actual = sha256_of(p)
        if actual.lower() != sha256.lower():
            raise BadModelFileError(f"checksum mismatch: SHA-256 is {actual[:12]}…, the catalogue expects "
                                    f"{sha256[:12]}…", name,
                                    "the file is damaged or was replaced; restore it from the release")
    try:
        data = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad pickles / zips
        text = " ".join(str(exc).split())
        # A safe load says "Weights only load failed" for any file it cannot read (a text file too); only an
        # unsupported global is a pickle of Python objects.
        if "Unsupported global" in text:
            why = "it contains Python objects that a safe load refuses (not a plain weights file)"
        elif "Weights only load failed" in text:  # torch's advice about weights_only would mislead here
            why = "not a PyTorch checkpoint, or a damaged one"
        else:
            why = f"not a PyTorch checkpoint or truncated ({text[:100]})"
        raise BadModelFileError(f"model file cannot be loaded: {why}", name,
                                "use a checkpoint written by ssimquality train") from None
    if not isinstance(data, dict) or "state_dict" not in data or "config" not in data:
        raise BadModelFileError("file is a PyTorch file but not an SSIMQuality checkpoint (no config / weights)",
                                name, "use a checkpoint written by ssimquality train")
    return data


def load_model(path: Union[str, Path], *, sha256: Optional[str] = None,
               device: Union[str, torch.device] = "cpu") -> SSIMRegressor:
    """Load a model checkpoint (safe load, optional checksum), in eval mode on ``device``."""
    data = read_checkpoint(path, sha256)
    cfg = data["config"]
    try:
        model = SSIMRegressor(str(cfg.get("arch", "resnet18")), int(cfg.get("input_size", 256)))
        # Release copies may be float16; the model computes in float32.
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in data["state_dict"].items()}
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BadModelFileError(f"weights do not fit the {cfg.get('arch')} architecture "
                                f"({' '.join(str(exc).split())[:120]})", str(path),
                                "use a checkpoint written by ssimquality train for this architecture") from None
    return model.to(resolve_device(device)).eval()


def catalog_path() -> Path:
    from .resources import MODELS

    return MODELS / "models.json"


def bundled_model_entry(name: Optional[str] = None) -> dict:
    """The catalogue entry of a bundled model (default: the first, the recommended one)."""
    path = catalog_path()
    if not path.is_file():
        raise BadModelFileError("no bundled model catalogue", str(path), "train one with `make train` or pass --model")
    entries = json.loads(path.read_text(encoding="utf-8"))["models"]
    if name is None:
        return entries[0]
    for e in entries:
        if e["name"] == name:
            return e
    raise BadModelFileError(f"no bundled model named {name!r}", str(path),
                            f"choose one of {', '.join(e['name'] for e in entries)}")


def find_model(model: Optional[Union[str, Path]] = None) -> dict:
    """The file a model argument means (``--model``, ``--init``, the Slicer panel's choice), as
    ``{"name", "path", "sha256"}``: None or "" is the recommended bundled model, a name in the catalogues (bundled
    or the user's, :func:`model_entries`) that model's file, with the SHA-256 to check it against; anything else
    is a path, with no name and no checksum.  A catalogue name (a string) wins over a file of the same name in
    the working folder (write ``./name``, or give a ``Path``, for the file).

    Examples
    --------
    >>> find_model()["name"] == bundled_model_entry()["name"]
    True
    >>> find_model("runs/model.pt")
    {'name': None, 'path': 'runs/model.pt', 'sha256': None}
    """
    if model is None or str(model) == "":
        entry = bundled_model_entry()
        return {"name": entry["name"], "path": str(catalog_path().parent / entry["file"]), "sha256": entry["sha256"]}
    if isinstance(model, str):  # a Path is a file: str(Path("./name")) would lose the "./" that says so
        for e in model_entries():
            if e["name"] == model:
                return {"name": e["name"], "path": e["path"], "sha256": e["sha256"]}
    return {"name": None, "path": str(model), "sha256": None}


def open_model(model: Optional[Union[str, Path]] = None, device: Union[str, torch.device] = "cpu") -> SSIMRegressor:
    """:func:`load_model` of what :func:`find_model` finds: a file, a catalogued name (checked against its
    SHA-256) or, for None, the bundled model.  A name that is neither says which names there are."""
    found = _found(model)
    return load_model(found["path"], sha256=found["sha256"], device=device)


def _found(model: Optional[Union[str, Path]]) -> dict:
    """:func:`find_model`, refusing a name that is neither a file nor catalogued (saying which names there are)."""
    found = find_model(model)
    if found["sha256"] is None and not Path(found["path"]).is_file():
        names = ", ".join(e["name"] for e in model_entries())
        raise BadModelFileError("no such model file, and no catalogued model of that name", str(model),
                                f"give a checkpoint file or one of: {names} (`ssimquality models` lists them)")
    return found


def model_identity(model: Optional[Union[str, Path]] = None) -> dict:
    """What a report names its model by: the file and its SHA-256, and its catalogue name when it has one
    (``model`` as :func:`find_model` takes it; None: the recommended bundled model).  Two reports with the same
    identity scored with the same weights."""
    found = _found(model)
    if found["sha256"] is not None:
        return {"name": found["name"], "file": found["path"], "sha256": found["sha256"]}
    return {"name": None, "file": str(Path(found["path"]).resolve()), "sha256": sha256_of(found["path"])}


def load_bundled_model(name: Optional[str] = None, device: Union[str, torch.device] = "cpu") -> SSIMRegressor:
    """The bundled model, checked against the SHA-256 in the catalogue."""
    entry = bundled_model_entry(name)
    return load_model(catalog_path().parent / entry["file"], sha256=entry["sha256"], device=device)


def user_models_dir() -> Path:
    """Where models the user trained are kept and catalogued: ``SSIMQUALITY_USER_DIR`` or ``~/.ssimquality``,
    then ``models/``; never the installed extension's folder."""
    base = os.environ.get("SSIMQUALITY_USER_DIR") or str(Path.home() / ".ssimquality")
    return Path(base) / "models"


def model_entries() -> List[dict]:
    """Every model the user can pick: the bundled ones, then the user's own, each with its ``path`` and
    ``where`` (``"bundled"`` or ``"user"``).  Names are unique; a user model may not shadow a bundled one."""
    out = []
    for folder, where in ((catalog_path().parent, "bundled"), (user_models_dir(), "user")):
        cat = folder / "models.json"
        if not cat.is_file():
            continue
        try:
            entries = json.loads(cat.read_text(encoding="utf-8"))["models"]
        except (OSError, ValueError, KeyError):
            continue  # a damaged user catalogue must not hide the bundled model
        names = {e["name"] for e in out}
        out += [{**e, "path": str(folder / e["file"]), "where": where} for e in entries if e["name"] not in names]
    return out


def register_user_model(checkpoint: Union[str, Path], name: str, description: str = "",
                        replace: bool = False) -> dict:
    """Copy a trained checkpoint into :func:`user_models_dir` and catalogue it there with its SHA-256, as
    ``name``: a bundled model's name is refused, and a model of the user's own only replaced when ``replace``."""
    check_new_model_name(name, replace=replace)
    read_checkpoint(checkpoint)  # a file that is not one is refused before the user's folder is made
    folder = user_models_dir()
    owners = {e["file"]: e["name"] for e in model_entries() if e["where"] == "user"}
    safe = model_file_stem(name)
    stem, n = safe, 1
    # Two names can make one file name ("site 1", "site_1"): a file that is another model's, or no model's, is
    # left alone.
    while (folder / f"{stem}.pt").exists() and owners.get(f"{stem}.pt") != name:
        n += 1
        stem = f"{safe}-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    return export_model(checkpoint, folder / f"{stem}.pt", name, description, force=True)


def model_file_stem(name: str) -> str:
    """A file or folder name made from a model's name: letters, digits, ``_ . -`` only, so that no name
    reaches outside the user's folder ("../x" is ``x``).

    Examples
    --------
    >>> model_file_stem("site 1"), model_file_stem("../../x"), model_file_stem("..")
    ('site_1', 'x', 'model')
    """
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "model"


def check_new_model_name(name: str, *, replace: bool = False) -> None:
    """Refuse ``name`` for a new user model: empty, a bundled model's, or (unless ``replace``) one the user
    already has; checked before a fine-tune starts, not after its minutes of training."""
    from .errors import BadParameterError, OutputExistsError, SSIMQualityError

    if not str(name).strip():
        raise SSIMQualityError("give the new model a name", hint="e.g. site-t1-2026")
    if any(c in str(name) for c in "/\\") or str(name).lower().endswith(".pt"):  # --model NAME would read as a file
        raise BadParameterError(f"a model's name must not look like a file path, got {name!r}", hint="e.g. site-t1-2026")
    taken = {e["name"]: e for e in model_entries()}.get(name)
    if taken is None:
        return
    if taken["where"] == "bundled":
        raise BadModelFileError(f"{name!r} is the name of a bundled model", name, "choose another name")
    if not replace:
        raise OutputExistsError(f"a model named {name!r} is already in your catalogue", taken["path"],
                                "choose another name, or replace it (--force)")


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """"auto" → CUDA when present, else CPU; a clear error for an unavailable CUDA request (every function that
    takes a device passes it through here: torch's own message comes from deep inside the first copy).

    Examples
    --------
    >>> resolve_device("cpu"), resolve_device(torch.device("cpu"))
    (device(type='cpu'), device(type='cpu'))
    """
    from .errors import SSIMQualityError

    device = str(device)

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.split(":")[0] not in ("cpu", "cuda"):  # "mps", "xpu", ...: not what the project runs or tests
        raise SSIMQualityError(f"unknown device {device!r}", None, "use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SSIMQualityError("CUDA was requested but no GPU is available to torch", None,
                               "use --device cpu or --device auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise SSIMQualityError(f"unknown device {device!r}", None, "use auto, cpu or cuda") from None


def export_model(checkpoint: Union[str, Path], dest: Union[str, Path], name: str, description: str = "",
                 half: bool = True, force: bool = False) -> dict:
    """Write a release copy of a trained model and register it in the catalogue next to it.

    The release copy holds only weights and config (no optimizer state), in
    float16 when ``half`` (half the size; predictions move by < 1e-3), and
    its SHA-256 goes into ``models.json`` so that every load is checked.
    The same checkpoint always exports to the same bytes, wherever it goes.
    """
    from .outputs import atomic_write, ensure_writable

    data = read_checkpoint(checkpoint)
    dest = Path(dest)
    ensure_writable(dest, force)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in data["state_dict"].items()}
    payload = {"format_version": FORMAT_VERSION, "config": data["config"], "state_dict": state}
    if "meta" in data:
        payload["meta"] = data["meta"]
    # Serialised in memory: torch.save names the archive's root folder after the file it writes, so saving to
    # the temporary file would make the checksum depend on that file's random name (the same weights exported
    # twice gave two SHA-256s); a buffer's archive is always named alike.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(dest, force=True) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    entry = {"name": name, "file": dest.name, "sha256": sha256_of(dest), "arch": data["config"]["arch"],
             "input_size": int(data["config"]["input_size"]), "description": description}
    cat = dest.parent / "models.json"
    entries = json.loads(cat.read_text(encoding="utf-8"))["models"] if cat.is_file() else []
    # A new release of the same file replaces every entry naming it: a stale checksum would refuse the new file.
    entries = [e for e in entries if e["name"] != name and e["file"] != dest.name]
    entries.insert(0, entry)
    with atomic_write(cat, force=True) as tmp:
        Path(tmp).write_text(json.dumps({"models": entries}, indent=2) + "\n", encoding="utf-8")
    return entry
