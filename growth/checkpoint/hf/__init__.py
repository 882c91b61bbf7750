"""Hugging Face interop on disk: import a Llama / Mistral / Qwen2 ``save_pretrained`` folder as a checkpoint
folder, export any checkpoint as a ``transformers`` folder (``convert.py``); the name and config maps are the
model's (``growth/model/hf_llama.py``)."""

from growth.checkpoint.hf.convert import export_hf, find_tokenizer, import_hf, read_hf_model
from growth.checkpoint.hf.files import HFWeights, read_hf_config
from growth.model.hf_llama import FAMILIES, HFConversionError

__all__ = [
    "FAMILIES",
    "HFConversionError",
    "HFWeights",
    "export_hf",
    "find_tokenizer",
    "import_hf",
    "read_hf_config",
    "read_hf_model",
]
