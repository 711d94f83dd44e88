"""The model zoo: every family module in this package registers its models on import."""
import importlib
import pkgutil

from archlab.zoo.registry import ModelInfo, get_model, list_models, model_info, register_model

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("registry", "common"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ModelInfo", "get_model", "list_models", "model_info", "register_model"]
