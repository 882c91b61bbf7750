"""growth: distributed pretraining with function-preserving model growth."""

__version__ = "0.1.0"


def _register_with_transformers() -> None:
    """``import growth`` makes ``transformers``' ``AutoConfig`` / ``AutoModelForCausalLM`` load the project's own
    model class (``growth/model/hf_model.py``, what ``tools/export_hf.py`` writes for non-Llama blocks).

    Importing transformers costs seconds and every process imports this package (data workers, ranks), so the
    registration waits until transformers' auto modules are imported: right away if they already are, else
    just after each one finishes loading (a finder on ``sys.meta_path`` wraps their loaders).
    """
    import importlib.abc
    import sys
    import warnings

    def loaded(module) -> None:
        importing = sys.modules.get("growth.model.hf_model")
        if importing is not None and not hasattr(importing, "register_loaded"):
            return  # hf_model itself is being imported (and made transformers load this): it registers at its end
        from growth.model.hf_model import register_loaded

        register_loaded()

    pending = {
        "transformers.models.auto.configuration_auto": loaded,
        "transformers.models.auto.modeling_auto": loaded,
    }

    def run(action, module) -> None:
        try:
            action(module)
        except Exception as err:  # never break the user's transformers import
            warnings.warn(
                f"growth: could not register its transformers model class ({type(err).__name__}: {err})",
                stacklevel=2,
            )

    class Loader(importlib.abc.Loader):
        def __init__(self, inner, action):
            self.inner, self.action = inner, action

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module) -> None:
            self.inner.exec_module(module)
            run(self.action, module)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    class AfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            action = pending.pop(name, None)
            if action is None:
                return None
            if not pending:
                sys.meta_path.remove(self)
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(name, path, target)
                    if spec is not None and spec.loader is not None:
                        spec.loader = Loader(spec.loader, action)
                        return spec
            return None

    for name in list(pending):
        if name in sys.modules:
            run(pending.pop(name), sys.modules[name])
    if pending:
        sys.meta_path.insert(0, AfterImport())


_register_with_transformers()
