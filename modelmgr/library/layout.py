"""ComfyUI's model folder layout under a models root, and the ``extra_model_paths.yaml`` that points
ComfyUI at it.

ComfyUI renamed two folders over time (``unet`` → ``diffusion_models``, ``clip`` →
``text_encoders``) and still reads both, so the old names are accepted as aliases and the YAML
lists both.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError

FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "checkpoints")
ALIASES = {"unet": "diffusion_models", "clip": "text_encoders"}
ROLE_FOLDER = {"diffusion_model": "diffusion_models", "text_encoder": "text_encoders",
               "vae": "vae", "lora": "loras", "checkpoint": "checkpoints"}
MODEL_SUFFIXES = (".safetensors", ".sft", ".gguf", ".ckpt", ".pt", ".pth", ".bin")
STATE_DIR = ".modelmgr"


def canonical_folder(name: str) -> str | None:
    """The canonical folder for a name or alias, or None if it is not a model folder."""
    name = name.strip().strip("/")
    if name in FOLDERS:
        return name
    return ALIASES.get(name)


def folder_of(relpath: str) -> str | None:
    """The canonical folder a path under the root lives in (its first component)."""
    return canonical_folder(relpath.split("/", 1)[0]) if "/" in relpath else None


def is_model_file(path: Path) -> bool:
    return path.suffix.lower() in MODEL_SUFFIXES


def extra_model_paths_yaml(root: Path, name: str = "modelmgr") -> str:
    """An ``extra_model_paths.yaml`` section mapping ComfyUI's folder types to ``root``.

    ComfyUI reads each key other than ``base_path``/``is_default`` as a folder type whose value
    holds one path per line, relative to ``base_path``; the legacy folder names are listed under
    the current types, as ComfyUI's own example file does.
    """
    lines = [f"{name}:", f"    base_path: {_yaml_str(str(Path(root).resolve()))}"]
    for folder in FOLDERS:
        aliases = [a for a, target in ALIASES.items() if target == folder]
        if aliases:
            lines.append(f"    {folder}: |")
            lines.extend(f"        {p}" for p in (folder, *aliases))
        else:
            lines.append(f"    {folder}: {folder}")
    return "\n".join(lines) + "\n"


def merge_extra_model_paths(existing: str, section: str) -> str:
    """Put ``section`` into an existing ``extra_model_paths.yaml`` text, keeping other entries."""
    if not existing.strip():
        return section
    try:
        current = yaml.safe_load(existing)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the existing extra_model_paths.yaml is not valid YAML: {exc}",
                          "fix or move it, then run the command again") from None
    if not isinstance(current, dict):
        raise ConfigError("the existing extra_model_paths.yaml is not a mapping of entries",
                          "fix or move it, then run the command again")
    current.update(yaml.safe_load(section))
    return yaml.safe_dump(current, sort_keys=False, default_flow_style=False)


def _yaml_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
