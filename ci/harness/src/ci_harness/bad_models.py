"""Model files that fail in known ways, for failure-path tests.

- `write_not_a_model(path)`: text with a `.gguf` name; refused by the model check
  (`catalog_core.inspect_gguf`) before any engine starts.
- `write_unloadable_model(path)`: a well-formed GGUF whose architecture no engine knows
  (`llorch-nosuch`) with one 2 MiB tensor: it passes the header check, and every
  llama.cpp engine then fails to load it ("unknown model architecture"), so the failure
  is the engine's own, in its log.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

__all__ = ["UNLOADABLE_ARCHITECTURE", "write_not_a_model", "write_unloadable_model"]

UNLOADABLE_ARCHITECTURE = "llorch-nosuch"


def write_not_a_model(path: Path) -> Path:
    path.write_text("this is not a model\n")
    return path


def write_unloadable_model(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), arch=UNLOADABLE_ARCHITECTURE)
    writer.add_context_length(4096)
    writer.add_tensor("token_embd.weight", np.zeros((1024, 512), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
