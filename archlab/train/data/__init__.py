"""Data for training: layouts on disk and embedded tasks, named by one spec string."""
from archlab.train.data.base import IGNORE_INDEX, DataError, Split, TaskData
from archlab.train.data.spec import layouts, load_data, parse_spec, register_layout

__all__ = ["DataError", "IGNORE_INDEX", "Split", "TaskData", "layouts", "load_data", "parse_spec", "register_layout"]
