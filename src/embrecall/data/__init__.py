"""Reading, validating, splitting and generating interaction logs."""

from embrecall.data.dataset import Dataset
from embrecall.data.load import load_dataset
from embrecall.data.split import Split, leave_last_out, split_dataset, time_split

__all__ = ["Dataset", "load_dataset", "Split", "leave_last_out", "time_split", "split_dataset"]
