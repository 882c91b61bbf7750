"""growth: distributed pretraining with function-preserving model growth.

Importing the package does nothing else: no import of ``transformers``, no import hooks. The project's own
``transformers`` classes are registered with the auto classes by ``import growth.model.hf_model``, which the
Hugging Face export and import code does where it uses them.
"""

__version__ = "0.1.0"
